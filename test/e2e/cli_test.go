package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLICertify runs `meshid certify` as a workload would, and checks what
// it prints and the files it writes.
func TestCLICertify(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t)
	ns := namespace(t, "cli")
	serviceAccount(t, ns, "worker")
	dir := t.TempDir()
	tokenFile, bundleFile := filepath.Join(dir, "token"), filepath.Join(dir, "anchors.pem")
	if err := os.WriteFile(tokenFile, []byte(token(t, ns, "worker", audience, nil)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundleFile, ca.anchor.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e.bin, "meshid"), "certify", "--ca", ca.addr, "--ca-id", ca.id(t).String(),
		"--token-file", tokenFile, "--trust-bundle-file", bundleFile, "--out-dir", out, "-o", "json")
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("meshid certify: %v\n%s", err, stderrOf(err))
	}
	var rep struct {
		SPIFFEID string `json:"spiffe_id"`
		Chain    []struct {
			Subject string `json:"subject"`
		} `json:"chain"`
	}
	if err := json.Unmarshal(stdout, &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if want := "spiffe://cluster.local/ns/" + ns + "/sa/worker"; rep.SPIFFEID != want || len(rep.Chain) != 3 {
		t.Fatalf("got %s with %d chain entries, want %s with leaf, issuer, anchor", rep.SPIFFEID, len(rep.Chain), want)
	}
	fi, err := os.Stat(filepath.Join(out, "svid.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// The wrong CA identity is refused before any token is sent.
	bad := exec.Command(filepath.Join(e.bin, "meshid"), "certify", "--ca", ca.addr, "--ca-id", "spiffe://cluster.local/ns/x/sa/impostor",
		"--token-file", tokenFile, "--trust-bundle-file", bundleFile)
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "impostor") {
		t.Fatalf("certify against the wrong CA identity: %v\n%s", err, out)
	}
	// A usage error exits 2.
	usage := exec.Command(filepath.Join(e.bin, "meshid"), "certify", "--ca", ca.addr)
	if err := usage.Run(); exitCode(err) != 2 {
		t.Fatalf("certify without --token-file exited %d, want 2", exitCode(err))
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
