package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

// meshid runs the meshid CLI and returns its output and exit code.
func meshid(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(need(t).bin, "meshid"), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), exitCode(err)
}

// trustObjects creates a namespace holding a bundle ConfigMap of anchors and
// an issuer Secret of iss (either may be nil: not created).
func trustObjects(t *testing.T, anchors []*issuer.KeyPair, iss *issuer.KeyPair) string {
	t.Helper()
	ctx := context.Background()
	ns := namespace(t, "check")
	if anchors != nil {
		var pem []byte
		for _, a := range anchors {
			pem = append(pem, a.CertPEM()...)
		}
		if _, err := need(t).client.CoreV1().ConfigMaps(ns).Create(ctx, bundleConfigMap(pem), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if iss != nil {
		if _, err := need(t).client.CoreV1().Secrets(ns).Create(ctx, issuerSecret(t, iss), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// TestCheck: meshid check passes a healthy install and catches, with exit 1
// and a clear row, each way the chain breaks.
func TestCheck(t *testing.T) {
	t.Parallel()
	kubeconfig := need(t).cluster.Kubeconfig
	now := time.Now()
	anchor := newAnchor(t, "check anchor")
	good := newIssuer(t, anchor, "check issuer")
	expired := issuertest.Anchor(t, issuertest.Name("expired anchor"), issuertest.NotBefore(now.Add(-400*24*time.Hour)), issuertest.TTL(365*24*time.Hour))
	late := issuertest.Intermediate(t, anchor, issuertest.Name("late issuer"), issuertest.NotBefore(now.Add(-40*time.Hour)), issuertest.TTL(48*time.Hour))
	stranger := newIssuer(t, newAnchor(t, "stranger anchor"), "stranger issuer")

	tests := []struct {
		name    string
		anchors []*issuer.KeyPair
		issuer  *issuer.KeyPair
		code    int
		row     string // a row that must say FAIL (or status)
		status  string
	}{
		{name: "healthy", anchors: []*issuer.KeyPair{anchor}, issuer: good, code: 0},
		{name: "expired anchor nothing uses", anchors: []*issuer.KeyPair{anchor, expired}, issuer: good, code: 1, row: "anchor 1 expired anchor"},
		{name: "issuer from another anchor", anchors: []*issuer.KeyPair{anchor}, issuer: stranger, code: 1, row: "issuer"},
		{name: "issuer expiring within the threshold", anchors: []*issuer.KeyPair{anchor}, issuer: late, code: 1, row: "issuer"},
		{name: "missing bundle", anchors: nil, issuer: good, code: 1, row: "bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := trustObjects(t, tt.anchors, tt.issuer)
			out, code := meshid(t, "", "check", "--kubeconfig", kubeconfig, "-n", ns, "--deployment", "")
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, out)
			}
			status := tt.status
			if status == "" {
				status = "FAIL"
			}
			if tt.row != "" && !hasRow(out, tt.row, status) {
				t.Fatalf("no %s row %q:\n%s", status, tt.row, out)
			}
			if !strings.Contains(out, "Time to outage") && tt.anchors != nil {
				t.Fatalf("no time-to-outage headline:\n%s", out)
			}
		})
	}

	t.Run("json and proxies", func(t *testing.T) {
		ca := startCA(t)
		ns := namespace(t, "checkproxy")
		serviceAccount(t, ns, "web")
		web := startProxy(t, ca, ns, "web")
		out, code := meshid(t, "", "check", "--kubeconfig", kubeconfig, "-n", ca.ns, "--deployment", "", "--proxies", web.admin+",127.0.0.1:1", "-o", "json")
		var rep struct {
			Status string `json:"status"`
			Checks []struct {
				Check, Status string
			} `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		statuses := map[string]string{}
		for _, c := range rep.Checks {
			statuses[c.Check] = c.Status
		}
		if statuses["proxy "+web.admin] != "ok" || statuses["proxy 127.0.0.1:1"] != "fail" || code != 1 || rep.Status != "fail" {
			t.Fatalf("exit %d, checks %v:\n%s", code, statuses, out)
		}
	})
}

func hasRow(out, check, status string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, check+" ") && strings.Contains(line, " "+status+" ") {
			return true
		}
	}
	return false
}

// TestVerifyAndInspect: meshid verify makes a real handshake as a service
// account and tells an accepted identity from a policy refusal; meshid
// inspect decodes and verifies what certify wrote.
func TestVerifyAndInspect(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t)
	ns := namespace(t, "verify")
	for _, sa := range []string{"web", "db", "evil"} {
		serviceAccount(t, ns, sa)
	}
	dbIn := freeAddr(t)
	_, port, _ := strings.Cut(dbIn, ":")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, fmt.Sprintf("ports:\n- port: %s\n  allow:\n  - serviceAccount: %s/web\n", port, ns))
	db := startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--policy", policyFile)
	dbID := "spiffe://cluster.local/ns/" + ns + "/sa/db"
	common := []string{"--kubeconfig", e.cluster.Kubeconfig, "--ca", ca.addr, "--ca-id", ca.id(t).String(), "--trust-bundle-file", db.bundleFile}

	out, code := meshid(t, "", append([]string{"verify", dbIn, "--as", ns + "/web", "--expect-id", dbID}, common...)...)
	if code != 0 || !strings.Contains(out, dbID) || !strings.Contains(out, "TLS 1.3") || !hasLine(out, "Accepted us", "yes") {
		t.Fatalf("verify as web: exit %d\n%s", code, out)
	}
	out, code = meshid(t, "", append([]string{"verify", dbIn, "--as", ns + "/evil"}, common...)...)
	if code != 1 || !strings.Contains(out, "refused our certificate") || !strings.Contains(out, "policy") {
		t.Fatalf("verify as evil: exit %d\n%s", code, out)
	}
	out, code = meshid(t, "", append([]string{"verify", dbIn, "--as", ns + "/web", "--expect-id", "spiffe://cluster.local/ns/" + ns + "/sa/other"}, common...)...)
	if code != 1 || !strings.Contains(out, "expected") {
		t.Fatalf("verify with the wrong --expect-id: exit %d\n%s", code, out)
	}

	// inspect what certify wrote.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token(t, ns, "web", audience, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := meshid(t, "", "certify", "--ca", ca.addr, "--ca-id", ca.id(t).String(), "--token-file", tokenFile,
		"--trust-bundle-file", db.bundleFile, "--out-dir", dir); code != 0 {
		t.Fatalf("certify: %s", out)
	}
	svid := filepath.Join(dir, "svid.pem")
	out, code = meshid(t, "", "inspect", svid, "--bundle", db.bundleFile)
	if code != 0 || !strings.Contains(out, "spiffe://cluster.local/ns/"+ns+"/sa/web") || !strings.Contains(out, "verifies against") || !strings.Contains(out, "ECDSA P-256") {
		t.Fatalf("inspect: exit %d\n%s", code, out)
	}
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other, newAnchor(t, "other").CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := meshid(t, "", "inspect", svid, "--bundle", other); code != 1 || !strings.Contains(out, "DOES NOT VERIFY") {
		t.Fatalf("inspect against another anchor: exit %d\n%s", code, out)
	}
	pem, _ := os.ReadFile(svid)
	if out, code := meshid(t, string(pem), "inspect", "-", "-o", "json"); code != 0 || !strings.Contains(out, `"spiffe_id"`) {
		t.Fatalf("inspect from stdin: exit %d\n%s", code, out)
	}
}

func hasLine(out, prefix, contains string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) && strings.Contains(line, contains) {
			return true
		}
	}
	return false
}
