package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/cmd/internal/cli"
)

// TestMessage: what an operator reads of an error: no internal package
// prefixes, wherever wrapping put them, and a gRPC status in words; other
// colons are kept.
func TestMessage(t *testing.T) {
	tests := []struct{ err, want string }{
		{"anchor: no rotation to resume; start one", "no rotation to resume; start one"},
		{"verify: certificate for shop/web: rotation: certify: rpc error: code = PermissionDenied desc = token refused", "certificate for shop/web: meshid-ca answered PermissionDenied: token refused"},
		{"install: --write-anchor-key /k: already exists", "--write-anchor-key /k: already exists"},
		{"inspect: the chain does not verify: x509: certificate signed by unknown authority", "the chain does not verify: x509: certificate signed by unknown authority"},
		{"kubeconfig /k: context \"prod\": not found", "kubeconfig /k: context \"prod\": not found"},
		{"stage Add: 4/5 converged (ca: 2 replicas)", "stage Add: 4/5 converged (ca: 2 replicas)"},
		{"open anchor: no such file", "open anchor: no such file"},
		{"authn: token is not a JWT", "token is not a JWT"},
		{"meshid-proxy: proxy: poll: open /var/run/meshid/ca-bundle.crt: no such file", "meshid-proxy: open /var/run/meshid/ca-bundle.crt: no such file"},
		{"admission: read webhook CA Secret: forbidden", "read webhook CA Secret: forbidden"},
		{"dashboard: listen tcp 127.0.0.1:80: bind: permission denied", "listen tcp 127.0.0.1:80: bind: permission denied"},
		{"rotation: certify: rpc error: code = Unauthenticated desc = authn: token expired", "meshid-ca answered Unauthenticated: token expired"},
		{"certify: cannot reach meshid-ca at 127.0.0.1:1 (--ca): rotation: certify: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\"",
			"cannot reach meshid-ca at 127.0.0.1:1 (--ca): connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""},
		{"verify: certificate for shop/web: rpc error: code = Unavailable desc = name resolver error: produced zero addresses", "certificate for shop/web: name resolver error: produced zero addresses"},
		{"rpc error: code = Unavailable desc = the CA has not loaded its issuer and trust bundle yet; retry shortly", "meshid-ca answered Unavailable: the CA has not loaded its issuer and trust bundle yet; retry shortly"},
	}
	for _, tt := range tests {
		if got := cli.Message(errors.New(tt.err)); got != tt.want {
			t.Errorf("Message(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
	var w bytes.Buffer
	if code := cli.Code(&w, fmt.Errorf("anchor: %w", errors.New("rotation: boom"))); code != cli.ExitProblem || w.String() != "Error: boom\n" {
		t.Fatalf("Code printed %q, exit %d", w.String(), code)
	}
}

// TestCAUnreachable: a dial that failed, or a deadline, is a CA not
// reached; a CA's own Unavailable answer and a failed handshake are not.
func TestCAUnreachable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("rotation: certify: %w", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)), true},
		{status.Error(codes.Unavailable, "name resolver error: produced zero addresses"), true},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: x509: certificate signed by unknown authority"`), false},
		{status.Error(codes.Unavailable, "the CA is shutting down; reconnect to another replica"), false},
		{status.Error(codes.PermissionDenied, "token refused"), false},
		{errors.New("connection error"), false},
	}
	for _, tt := range tests {
		if got := cli.CAUnreachable(tt.err); got != tt.want {
			t.Errorf("CAUnreachable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestDurationUsage: a day-style flag's help shows one default, the one
// its usage says, or the value it starts with.
func TestDurationUsage(t *testing.T) {
	var ttl, within time.Duration
	warn := 60 * 24 * time.Hour
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Var(cli.Duration{D: &ttl}, "anchor-ttl", "lifetime of a generated anchor (default 3650d)")
	fs.Var(cli.Duration{D: &within}, "issuer-warn-within", "fail when the issuer expires within this")
	fs.Var(cli.Duration{D: &warn}, "warn-within", "warn when an anchor expires within this")
	usage := fs.FlagUsages()
	for _, want := range []string{
		"--anchor-ttl duration           lifetime of a generated anchor (default 3650d)\n",
		"--issuer-warn-within duration   fail when the issuer expires within this\n",
		"--warn-within duration          warn when an anchor expires within this (default 60d)\n",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("no %q in\n%s", want, usage)
		}
	}
	if err := fs.Parse([]string{"--anchor-ttl", "0"}); err != nil || ttl != 0 {
		t.Fatalf("--anchor-ttl 0: %v, %v", err, ttl)
	}
}

func TestStyle(t *testing.T) {
	tests := []struct {
		terminal bool
		noColor  string
		good     string
	}{
		{terminal: true, good: "\x1b[32m✔ ok\x1b[0m"},
		{terminal: true, noColor: "1", good: "ok"},
		{terminal: false, good: "ok"},
	}
	for _, tt := range tests {
		s := cli.NewStyle(tt.terminal, tt.noColor)
		if got := s.Good("ok"); got != tt.good {
			t.Errorf("terminal %v, NO_COLOR %q: Good = %q, want %q", tt.terminal, tt.noColor, got, tt.good)
		}
		if bad := s.Bad("no"); s.Marks() != strings.Contains(bad, "× ") || s.Mark(false, "no") != bad {
			t.Errorf("terminal %v, NO_COLOR %q: Bad = %q", tt.terminal, tt.noColor, bad)
		}
	}
	// Anything that is not a terminal gets plain text: a buffer, a pipe.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, out := range []any{&bytes.Buffer{}, w} {
		if s := cli.StyleFor(out.(interface{ Write([]byte) (int, error) })); s.Marks() {
			t.Errorf("marks for %T", out)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	b := cli.BuildInfo()
	if b.Version != cli.DevVersion || b.Go != runtime.Version() {
		t.Fatalf("BuildInfo = %+v, want version dev (no -ldflags in tests) and %s", b, runtime.Version())
	}
	for _, tt := range []struct {
		b    cli.Build
		want string
	}{
		{cli.Build{Version: "v1.2.0", Commit: "0123456789abcdef0123", Go: "go1.26.11"}, "v1.2.0 (commit 0123456789ab, go1.26.11)"},
		{cli.Build{Version: "v1.2.0-3-g0123456-dirty", Commit: "0123456789ab", Modified: true, Go: "go1.26.11"}, "v1.2.0-3-g0123456-dirty (commit 0123456789ab, modified, go1.26.11)"},
		{cli.Build{Version: "dev", Go: "go1.26.11"}, "dev (commit unknown, go1.26.11)"},
	} {
		if got := tt.b.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.b, got, tt.want)
		}
	}
}

// TestLogStart: a daemon's first line names it and its build.
func TestLogStart(t *testing.T) {
	var buf bytes.Buffer
	cli.LogStart(slog.New(slog.NewJSONHandler(&buf, nil)), "meshid-ca")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["msg"] != "meshid-ca starting" || rec["version"] != cli.DevVersion || rec["go"] != runtime.Version() {
		t.Fatalf("logged %s", buf.String())
	}
}
