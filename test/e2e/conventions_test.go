package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
)

// TestInstallKeyFileRerun: install --apply --write-anchor-key, run twice.
// The second run refuses the existing key file before it generates
// anything: the file is unchanged and nothing is applied. A run with a new
// key file refuses the existing install, before it writes that file.
func TestInstallKeyFileRerun(t *testing.T) {
	t.Parallel()
	e := need(t)
	ns := namespace(t, "rerun")
	keyFile := filepath.Join(t.TempDir(), "anchor.key")
	args := []string{"install", "-n", ns, "--webhook=false", "--apply", "--kubeconfig", e.cluster.Kubeconfig, "--image", "example.invalid/meshid-ca:test"}

	out, code := meshid(t, "", append(args, "--write-anchor-key", keyFile)...)
	if code != 0 || !strings.Contains(out, "configmap/meshid-trust-bundle applied") {
		t.Fatalf("first install: exit %d\n%s", code, out)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	unchanged := trustUnchanged(t, ns)

	out, code = meshid(t, "", append(args, "--write-anchor-key", keyFile)...)
	if code != 1 || !strings.Contains(out, "Error: --write-anchor-key "+keyFile+": already exists") || strings.Contains(out, "GENERATED") || strings.Contains(out, "applied") {
		t.Fatalf("second install with the same key file: exit %d\n%s", code, out)
	}
	if again, _ := os.ReadFile(keyFile); string(again) != string(key) {
		t.Fatal("the second install changed the saved anchor key")
	}
	unchanged(t)

	other := filepath.Join(t.TempDir(), "other.key")
	out, code = meshid(t, "", append(args, "--write-anchor-key", other)...)
	if code != 1 || !strings.Contains(out, "meshid is already installed in namespace "+ns) || !strings.Contains(out, "nothing was generated or applied") || strings.Contains(out, "GENERATED") {
		t.Fatalf("a generated anchor over the install: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(other); err == nil {
		t.Fatal("wrote a key file for an anchor that was refused")
	}
	unchanged(t)
}

// TestRotateAnchorAbortForce: a rotation killed in stage Reissue is
// removed with abort --force: the state is gone, nothing else changed (the
// bundle with both anchors, the issuer from the new anchor, the saved
// keys), and the output says so; status is clean; a new start refuses
// until the saved keys are dealt with, before it generates an anchor.
func TestRotateAnchorAbortForce(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms")
	newPair(t, ca, "force")
	common := []string{"-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig, "--stage-timeout", "2m"}
	killAt(t, "stage Reissue:", append([]string{"rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--reissue-window", "2s"}, common...)...)

	ctx := context.Background()
	cms, secrets := e.client.CoreV1().ConfigMaps(ca.ns), e.client.CoreV1().Secrets(ca.ns)
	bundleBefore, err := cms.Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issuerBefore, err := secrets.Get(ctx, "meshid-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A plain abort could go back; --force drops the state instead.
	out, code := meshid(t, "", append([]string{"rotate-anchor", "abort", "--force", "-o", "json"}, common...)...)
	if code != 0 {
		t.Fatalf("abort --force: exit %d\n%s", code, out)
	}
	var left struct {
		StateRemoved bool   `json:"state_removed"`
		Removed      string `json:"removed_stage"`
		Bundle       struct {
			SHA256  string `json:"sha256"`
			Anchors []struct {
				Role string `json:"role"`
			} `json:"anchors"`
		} `json:"bundle"`
		Issuer struct {
			ChainsTo string `json:"chains_to"`
		} `json:"issuer"`
		Keys []string `json:"saved_keys"`
	}
	if err := json.Unmarshal([]byte(out), &left); err != nil {
		t.Fatalf("abort --force -o json: %v\n%s", err, out)
	}
	published, err := bundle.Parse([]byte(bundleBefore.Data[bundle.Key]))
	if err != nil {
		t.Fatal(err)
	}
	if !left.StateRemoved || left.Removed != "Reissue" || left.Bundle.SHA256 != published.SHA256() || len(left.Bundle.Anchors) != 2 ||
		!strings.HasPrefix(left.Issuer.ChainsTo, "new anchor ") || strings.Join(left.Keys, ",") != "new-anchor.key,old-issuer.crt,old-issuer.key" {
		t.Fatalf("leftovers:\n%s", out)
	}

	if _, err := cms.Get(ctx, "meshid-rotation", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the rotation state is still there (%v)", err)
	}
	if cm, err := cms.Get(ctx, "meshid-trust-bundle", metav1.GetOptions{}); err != nil || cm.ResourceVersion != bundleBefore.ResourceVersion {
		t.Fatalf("abort --force changed the bundle (%v)", err)
	}
	if s, err := secrets.Get(ctx, "meshid-issuer", metav1.GetOptions{}); err != nil || s.ResourceVersion != issuerBefore.ResourceVersion {
		t.Fatalf("abort --force changed the issuer (%v)", err)
	}
	if _, err := secrets.Get(ctx, "meshid-rotation", metav1.GetOptions{}); err != nil {
		t.Fatalf("abort --force deleted the saved keys: %v", err)
	}

	status, code := meshid(t, "", append([]string{"rotate-anchor", "status"}, common...)...)
	if code != 0 || !strings.Contains(status, "no rotation has been started") {
		t.Fatalf("status after abort --force: exit %d\n%s", code, status)
	}
	keyFile := filepath.Join(t.TempDir(), "next.key")
	out, code = meshid(t, "", append([]string{"rotate-anchor", "start", "--generate", "--write-anchor-key", keyFile}, common...)...)
	if code != 1 || !strings.Contains(out, "still holds a rotation's keys") || strings.Contains(out, "generated the new anchor") {
		t.Fatalf("start over the saved keys: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a refused start wrote a key file")
	}
	// The text form says the same, with what to do.
	out, code = meshid(t, "", append([]string{"rotate-anchor", "abort", "--force"}, common...)...)
	if code != 0 || !strings.Contains(out, "Removed nothing: no rotation state is stored") || !strings.Contains(out, "kubectl -n "+ca.ns+" delete secret meshid-rotation") {
		t.Fatalf("abort --force with only the keys left: exit %d\n%s", code, out)
	}
}
