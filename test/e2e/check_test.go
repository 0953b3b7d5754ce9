package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
)

// reportsOf reads every fleet report published in ns.
func reportsOf(t *testing.T, ns string) []fleet.Report {
	t.Helper()
	cms, err := need(t).client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	return fleet.Read(cms.Items, time.Now())
}

// waitUpdate waits until the CA in ns reports a pending update of material
// with status.
func waitUpdate(t *testing.T, ns, material string, status fleet.UpdateStatus) fleet.Update {
	t.Helper()
	var found fleet.Update
	eventually(t, 30*time.Second, func() error {
		for _, r := range reportsOf(t, ns) {
			for _, u := range r.Updates {
				if u.Material == material && u.Status == status {
					found = u
					return nil
				}
			}
		}
		return fmt.Errorf("no %s %s update reported in %s", status, material, ns)
	})
	return found
}

// checkRow returns the line of check's table whose row starts with name,
// or "".
func checkRow(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	return ""
}

// wantRow fails t unless out has a row named name with status whose line
// holds every one of details.
func wantRow(t *testing.T, out, name, status string, details ...string) {
	t.Helper()
	line := checkRow(out, name)
	if !regexp.MustCompile(`\s` + status + `\s`).MatchString(line) {
		t.Fatalf("no %s row %q:\n%s", status, name, out)
	}
	for _, d := range details {
		if !strings.Contains(line, d) {
			t.Fatalf("row %q does not say %q:\n%s", name, d, out)
		}
	}
}

// wantHint fails t unless out has a hint for the row named name holding
// contains.
func wantHint(t *testing.T, out, name, contains string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "hint: "+name) && strings.Contains(line, contains) {
			return
		}
	}
	t.Fatalf("no hint for %q holding %q:\n%s", name, contains, out)
}

// TestCheckInForce: with meshid-ca running, check reports what the CA has
// in force, not what the objects hold: a refused expired issuer and a
// deleted Secret are failing rows of their own, and the time to outage is
// the issuer in force's; an expired extra anchor nothing uses says so.
func TestCheckInForce(t *testing.T) {
	t.Parallel()
	kubeconfig := need(t).cluster.Kubeconfig
	check := func(t *testing.T, ns string) (string, int) {
		t.Helper()
		return meshid(t, "", "check", "--kubeconfig", kubeconfig, "-n", ns, "--deployment", "")
	}
	// outage is the headline when it names the issuer in force: the CA's
	// 48 h issuer, made when the test started.
	outage := regexp.MustCompile(`(?m)^Time to outage: 4[67]h\d\dm \(issuer (\S+)/meshid-issuer in force, at `)

	t.Run("expired issuer in the Secret", func(t *testing.T) {
		t.Parallel()
		ca := startCA(t, "--fleet-report-interval", "200ms", "--replica", "ca-0")
		expired, err := ca.anchor.NewIntermediate(issuer.CAParams{CommonName: "expired issuer", NotBefore: time.Now().Add(-72 * time.Hour), TTL: 48 * time.Hour, MaxPathLenZero: true})
		if err != nil {
			t.Fatal(err)
		}
		updateSecret(t, ca.ns, issuerSecret(t, expired).Data)
		if u := waitUpdate(t, ca.ns, "issuer", fleet.UpdateRefused); u.SHA256 != expired.Fingerprint() || !strings.Contains(u.Reason, "expired") {
			t.Fatalf("reported update %+v, want the expired issuer refused", u)
		}
		out, code := check(t, ca.ns)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantRow(t, out, "issuer "+ca.ns+"/meshid-issuer", "OK", "in force on 1 of 1 replicas: CN=e2e issuer", ca.issuer.Fingerprint()[:12])
		wantRow(t, out, "issuer update "+ca.ns+"/meshid-issuer", "FAIL", "holds CN=expired issuer", "refused by 1 of 1 replicas since", "has expired", "meshid-ca keeps signing with issuer "+ca.issuer.Fingerprint()[:12])
		wantHint(t, out, "issuer update "+ca.ns+"/meshid-issuer", "`kubectl --kubeconfig "+kubeconfig+" -n "+ca.ns+" create secret tls meshid-issuer --cert=issuer.crt --key=issuer.key --dry-run=client -o yaml")
		if m := outage.FindStringSubmatch(out); m == nil || m[1] != ca.ns {
			t.Fatalf("the time to outage is not the issuer in force's:\n%s", out)
		}
	})

	t.Run("deleted Secret", func(t *testing.T) {
		t.Parallel()
		ca := startCA(t, "--fleet-report-interval", "200ms", "--replica", "ca-0")
		if err := need(t).client.CoreV1().Secrets(ca.ns).Delete(context.Background(), "meshid-issuer", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitUpdate(t, ca.ns, "issuer", fleet.UpdateGone)
		out, code := check(t, ca.ns)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantRow(t, out, "issuer "+ca.ns+"/meshid-issuer", "OK", "in force on 1 of 1 replicas")
		wantRow(t, out, "issuer update "+ca.ns+"/meshid-issuer", "FAIL", "Secret not found", "lost by 1 of 1 replicas since", "was deleted")
		wantHint(t, out, "issuer update "+ca.ns+"/meshid-issuer", "create secret tls meshid-issuer")
		if m := outage.FindStringSubmatch(out); m == nil || m[1] != ca.ns {
			t.Fatalf("the time to outage is not the issuer in force's (the anchor's 364d, before):\n%s", out)
		}
	})

	t.Run("stale extra anchor", func(t *testing.T) {
		t.Parallel()
		ca := startCA(t, "--fleet-report-interval", "200ms", "--replica", "ca-0")
		old, err := issuer.NewAnchor(issuer.CAParams{CommonName: "expired anchor", NotBefore: time.Now().Add(-400 * 24 * time.Hour), TTL: 365 * 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		both := string(ca.anchor.CertPEM()) + string(old.CertPEM())
		ctx := context.Background()
		cm, err := need(t).client.CoreV1().ConfigMaps(ca.ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["ca-bundle.crt"] = both
		if _, err := need(t).client.CoreV1().ConfigMaps(ca.ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		b, err := bundle.Parse([]byte(both))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			for _, r := range reportsOf(t, ca.ns) {
				if r.BundleSHA256 == b.SHA256() && len(r.Anchors) == 2 {
					return nil
				}
			}
			return fmt.Errorf("the CA does not report the two-anchor bundle yet")
		})
		out, code := check(t, ca.ns)
		if code != 1 {
			t.Fatalf("exit %d, want 1 (an expired anchor fails even unused):\n%s", code, out)
		}
		sha := bundle.Fingerprint(old.Cert)
		wantRow(t, out, "anchor 1 expired anchor ("+sha[:12]+")", "FAIL", "expired at", "nothing uses it (the issuer chains to anchor "+bundle.Fingerprint(ca.anchor.Cert)[:12])
		wantRow(t, out, "anchor 0 e2e anchor ("+bundle.Fingerprint(ca.anchor.Cert)[:12]+")", "OK", "used by the issuer in force")
		wantHint(t, out, "anchor 1 expired anchor", "delete the certificate whose SHA-256 is "+sha)
		if strings.Contains(out, "nothing it signed verifies") || strings.Contains(out, "--emergency") {
			t.Fatalf("the stale anchor is reported as an outage:\n%s", out)
		}
		if m := outage.FindStringSubmatch(out); m == nil {
			t.Fatalf("the time to outage is not the issuer in force's:\n%s", out)
		}
	})
}

// TestCheckPreflight: a dead API server, a missing namespace and a service
// account without rights are each one failing preflight row with the hint
// for it, the rows that depend on it skipped, and exit 1.
func TestCheckPreflight(t *testing.T) {
	t.Parallel()
	e := need(t)
	noInstall := func(t *testing.T, out string) {
		t.Helper()
		if strings.Contains(out, "meshid install") || strings.Contains(out, "hint: bundle") || strings.Contains(out, "hint: issuer") {
			t.Fatalf("hints beyond the failing preflight row:\n%s", out)
		}
	}

	t.Run("dead API server", func(t *testing.T) {
		t.Parallel()
		cfg, err := clientcmd.LoadFromFile(e.cluster.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		dead := "https://" + freeAddr(t) // a closed loopback port
		for _, c := range cfg.Clusters {
			c.Server = dead
		}
		path := filepath.Join(t.TempDir(), "dead.kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			t.Fatal(err)
		}
		out, code := meshid(t, "", "check", "--kubeconfig", path)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantRow(t, out, "api server", "FAIL", "cannot reach the API server", "connection refused")
		wantHint(t, out, "api server", "`kubectl --kubeconfig "+path+" cluster-info`")
		wantRow(t, out, "namespace meshid", "SKIP", "skipped: the API server cannot be reached")
		wantRow(t, out, "bundle meshid/meshid-trust-bundle", "SKIP", "skipped: the API server cannot be reached")
		wantRow(t, out, "issuer meshid/meshid-issuer", "SKIP", "skipped")
		noInstall(t, out)
	})

	t.Run("missing namespace", func(t *testing.T) {
		t.Parallel()
		out, code := meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", "nowhere-e2e")
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantRow(t, out, "namespace nowhere-e2e", "FAIL", "not found")
		wantHint(t, out, "namespace nowhere-e2e", "`meshid install --apply -n nowhere-e2e --kubeconfig "+e.cluster.Kubeconfig+"`")
		wantRow(t, out, "rbac", "SKIP", "skipped: namespace nowhere-e2e does not exist")
		wantRow(t, out, "bundle nowhere-e2e/meshid-trust-bundle", "SKIP", "does not exist")
		if strings.Count(out, "hint: ") != 1 {
			t.Fatalf("more than the namespace's hint:\n%s", out)
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		t.Parallel()
		ns := trustObjects(t, []*issuer.KeyPair{newAnchor(t, "forbidden anchor")}, nil)
		serviceAccount(t, ns, "nobody")
		out, code := meshid(t, "", "check", "--kubeconfig", saKubeconfig(t, ns, "nobody"), "-n", ns)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		wantRow(t, out, "api server", "OK", "reachable, Kubernetes v1.")
		wantRow(t, out, "namespace "+ns, "SKIP", "cannot tell whether it exists", "forbidden")
		wantRow(t, out, "rbac", "FAIL", "system:serviceaccount:"+ns+":nobody may not get configmaps meshid-trust-bundle, get secrets meshid-issuer, list configmaps")
		wantHint(t, out, "rbac", "`kubectl --kubeconfig ")
		wantHint(t, out, "rbac", "create rolebinding meshid-check --role=meshid-check --serviceaccount="+ns+":nobody`")
		wantRow(t, out, "bundle "+ns+"/meshid-trust-bundle", "SKIP", "not allowed to get configmaps meshid-trust-bundle (see rbac)")
		wantRow(t, out, "issuer "+ns+"/meshid-issuer", "SKIP", "not allowed to get secrets meshid-issuer (see rbac)")
		wantRow(t, out, "ca reports "+ns+"/meshid-fleet-*", "SKIP", "not allowed to list configmaps")
		noInstall(t, out)
	})
}

// TestCheckCertManagerNotReady: with cert-manager's real controller, an
// Issuer whose anchor Secret is missing stays not ready, and check shows
// cert-manager's own reasons on the Issuer, the Certificate and the anchor
// Secret rather than a bare "Secret not found".
func TestCheckCertManagerNotReady(t *testing.T) {
	t.Parallel()
	e := need(t)
	ns := trustObjects(t, []*issuer.KeyPair{newAnchor(t, "cm anchor")}, nil)
	startCertManager(t, ns)
	objects := fmt.Sprintf(`apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: meshid-anchor, namespace: %[1]s}
spec: {ca: {secretName: meshid-anchor}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: meshid-issuer, namespace: %[1]s}
spec:
  commonName: meshid issuer
  isCA: true
  duration: 48h
  renewBefore: 25h
  secretName: meshid-issuer
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: meshid-anchor, kind: Issuer, group: cert-manager.io}
`, ns)
	if out, err := kubectl(t, objects, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var out string
	var code int
	eventually(t, 60*time.Second, func() error {
		out, code = meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", ns, "--deployment", "")
		if !regexp.MustCompile(`(?m)^cert-manager issuer \S+\s+FAIL\s+-\s+not Ready \(`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^cert-manager certificate \S+\s+FAIL\s+-\s+not Ready \(`).MatchString(out) {
			return fmt.Errorf("cert-manager has not set its conditions yet:\n%s", out)
		}
		return nil
	})
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	wantRow(t, out, "cert-manager issuer "+ns+"/meshid-anchor", "FAIL", `meshid-anchor`)
	wantHint(t, out, "cert-manager issuer "+ns+"/meshid-anchor", "describe issuer meshid-anchor`")
	wantRow(t, out, "anchor secret "+ns+"/meshid-anchor", "FAIL", "Secret not found: the CA Issuer cannot sign the issuer")
	wantHint(t, out, "anchor secret "+ns+"/meshid-anchor", "create secret tls meshid-anchor --cert=anchor.crt --key=anchor.key`")
	wantRow(t, out, "cert-manager certificate "+ns+"/meshid-issuer", "FAIL", "not Ready (")
	wantRow(t, out, "issuer "+ns+"/meshid-issuer", "FAIL", "Secret not found")
	wantHint(t, out, "issuer "+ns+"/meshid-issuer", "cert-manager writes it once Certificate "+ns+"/meshid-issuer is Ready")
	if strings.Contains(out, "meshid install") {
		t.Fatalf("a generic install hint:\n%s", out)
	}
	t.Logf("check:\n%s", out)
}
