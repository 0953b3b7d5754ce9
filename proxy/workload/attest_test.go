package workload_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/proxy/workload"
)

func u32(n uint32) *uint32 { return &n }

func TestParseAllow(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		want workload.Allow
		err  string
	}{
		{in: "uid=1000", want: workload.Allow{UID: u32(1000)}},
		{in: "uid=0,gid=5,path=/usr/bin/app,sha256=" + strings.ToUpper(hash), want: workload.Allow{UID: u32(0), GID: u32(5), Path: "/usr/bin/app", SHA256: hash}},
		{in: "", err: "empty rule"},
		{in: "uid=alice", err: "want a number"},
		{in: "uid=-1", err: "want a number"},
		{in: "uid=1,uid=2", err: "uid given twice"},
		{in: "path=bin/app", err: "absolute path"},
		{in: "sha256=abc", err: "64 hex digits"},
		{in: "pid=1", err: `unknown key "pid"`},
		{in: "uid", err: "want KEY=VALUE"},
		{in: "uid=", err: "want KEY=VALUE"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := workload.ParseAllow(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseAllow(%q) = %v, want an error containing %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.UID != nil && tc.want.UID != nil && *got.UID == *tc.want.UID, got.GID == nil, got.Path, got.SHA256) !=
				fmt.Sprint(true, tc.want.GID == nil, tc.want.Path, tc.want.SHA256) || (tc.want.GID != nil && *got.GID != *tc.want.GID) {
				t.Fatalf("ParseAllow(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseAllow(f *testing.F) {
	f.Add("uid=1000,gid=1000,path=/usr/bin/app")
	f.Add("sha256=" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		a, err := workload.ParseAllow(s)
		if err == nil && a.UID == nil && a.GID == nil && a.Path == "" && a.SHA256 == "" {
			t.Fatalf("ParseAllow(%q) accepted a rule that matches everyone", s)
		}
	})
}

func TestAllowMatch(t *testing.T) {
	c := workload.Caller{PID: 7, UID: 1000, GID: 100, Exe: "/usr/bin/app", SHA256: "aa"}
	for _, tc := range []struct {
		name string
		rule workload.Allow
		want bool
	}{
		{"uid", workload.Allow{UID: u32(1000)}, true},
		{"other uid", workload.Allow{UID: u32(1001)}, false},
		{"uid and other gid", workload.Allow{UID: u32(1000), GID: u32(0)}, false},
		{"path", workload.Allow{Path: "/usr/bin/app"}, true},
		{"other path", workload.Allow{UID: u32(1000), Path: "/usr/bin/other"}, false},
		{"hash", workload.Allow{SHA256: "aa"}, true},
		{"other hash", workload.Allow{SHA256: "bb"}, false},
	} {
		if got := tc.rule.Match(c); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (workload.Allow{Path: "/x"}).Match(workload.Caller{}) {
		t.Error("a caller whose executable is unknown matched a path rule")
	}
}

// clientEnv makes the test binary a Workload API client (TestClientProcess)
// of the socket it names.
const clientEnv = "MESHID_TEST_WORKLOAD_SOCKET"

// TestClientProcess is the client the attestation test runs as another
// process: it prints "svid ID" or "code CODE".
func TestClientProcess(t *testing.T) {
	socket := os.Getenv(clientEnv)
	if socket == "" {
		t.Skip("run by TestAttestation only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		fmt.Printf("code %s: %v\n", status.Code(err), err)
		return
	}
	fmt.Printf("svid %s\n", svid.ID)
}

// TestAttestation serves the Workload API under several rule sets and runs
// a client process as root and as another UID (nobody, group root so it
// may open the 0660 socket): a caller a rule admits gets the SVID, any
// other gets PERMISSION_DENIED.
func TestAttestation(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client under another UID")
	}
	dir, err := os.MkdirTemp("", "workload-attest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o750); err != nil { // group root may enter
		t.Fatal(err)
	}
	exe := copyExecutable(t, dir)
	sum := fileSum(t, exe)

	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/db")
	store := storeFor(t, id)

	const nobody = 65534
	root, other := (*syscall.Credential)(nil), &syscall.Credential{Uid: nobody, Gid: 0}
	for i, tc := range []struct {
		name     string
		allow    []workload.Allow
		admitted []*syscall.Credential
		refused  []*syscall.Credential
	}{
		{"no rules admit everyone", nil, []*syscall.Credential{root, other}, nil},
		{"uid", []workload.Allow{{UID: u32(0)}}, []*syscall.Credential{root}, []*syscall.Credential{other}},
		{"uid and gid", []workload.Allow{{UID: u32(nobody), GID: u32(0)}}, []*syscall.Credential{other}, []*syscall.Credential{root}},
		{"path", []workload.Allow{{UID: u32(nobody), Path: exe}}, []*syscall.Credential{other}, []*syscall.Credential{root}},
		{"other path", []workload.Allow{{Path: "/usr/bin/true"}}, nil, []*syscall.Credential{root, other}},
		{"sha256", []workload.Allow{{SHA256: sum}}, []*syscall.Credential{root, other}, nil},
		{"other sha256", []workload.Allow{{SHA256: strings.Repeat("0", 64)}}, nil, []*syscall.Credential{root, other}},
		{"either rule", []workload.Allow{{UID: u32(1)}, {UID: u32(nobody)}}, []*syscall.Credential{other}, []*syscall.Credential{root}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case is its own server; the clients' start-up dominates
			socket := filepath.Join(dir, fmt.Sprintf("api-%d.sock", i))
			serve(t, workload.New(store, nil, tc.allow), socket)
			for _, cred := range tc.admitted {
				if got := runClient(t, exe, socket, cred); got != "svid "+id.String() {
					t.Errorf("uid %s: got %q, want the SVID %s", uidOf(cred), got, id)
				}
			}
			for _, cred := range tc.refused {
				if got := runClient(t, exe, socket, cred); !strings.HasPrefix(got, "code "+codes.PermissionDenied.String()) || !strings.Contains(got, "matches no --workload-api-allow rule") {
					t.Errorf("uid %s: got %q, want PermissionDenied naming the rules", uidOf(cred), got)
				}
			}
		})
	}
}

func uidOf(c *syscall.Credential) string {
	if c == nil {
		return "0"
	}
	return fmt.Sprint(c.Uid)
}

// serve runs s on socket until the test ends and waits for the socket.
func serve(t testing.TB, s *workload.Server, socket string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, socket) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("Serve ended: %v", err)
		case <-deadline:
			t.Fatalf("no socket at %s after 10s", socket)
		case <-tick.C:
		}
	}
}

func runClient(t *testing.T, exe, socket string, cred *syscall.Credential) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestClientProcess$")
	cmd.Env = append(os.Environ(), clientEnv+"="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "svid ") || strings.HasPrefix(line, "code ") {
			return line
		}
	}
	t.Fatalf("client printed no result: %s", out)
	return ""
}

// copyExecutable copies the test binary where another UID may run it.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "client")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}
