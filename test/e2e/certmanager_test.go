package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/rotation"
)

// startCertManager applies cert-manager's CRDs (from its Go module) and runs
// its real controller, watching namespace ns only (tests run in parallel),
// until the test ends.
func startCertManager(t *testing.T, ns string) {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locate cert-manager's module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(dir)), "deploy", "crds")
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", crds); err != nil {
		t.Fatalf("apply cert-manager CRDs: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "crd/certificaterequests.cert-manager.io"); err != nil {
		t.Fatalf("cert-manager CRDs not established: %v\n%s", err, out)
	}
	p, exited := spawn(t, "cert-manager-controller", "--kubeconfig", need(t).cluster.Kubeconfig, "--min-backoff", "2s", "--namespace", ns)
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("cert-manager-controller exited: %v\n%s", err, p.logs(t))
		default:
		}
		if !strings.Contains(p.logs(t), "cert-manager controllers running") {
			return fmt.Errorf("cert-manager-controller not running yet")
		}
		return nil
	})
}

// TestInstallCertManager: with cert-manager's real controller, `meshid
// install --cert-manager` makes cert-manager issue the issuer Secret;
// meshid-ca, run with the Deployment's flags and RBAC, issues certificates
// that chain to the anchor; when cert-manager re-issues the issuer, the CA
// uses the new one without a restart.
func TestInstallCertManager(t *testing.T) {
	t.Parallel()
	e := need(t)
	const ns = "meshid-cm"
	startCertManager(t, ns)
	out, code := meshid(t, "", "install", "--cert-manager", "--webhook=false", "-n", ns, "--apply", "--kubeconfig", e.cluster.Kubeconfig)
	if code != 0 || !strings.Contains(out, "certificate/meshid-issuer applied") {
		t.Fatalf("install --cert-manager --apply: exit %d\n%s", code, out)
	}
	ctx := context.Background()
	eventually(t, 30*time.Second, func() error {
		s, err := e.client.CoreV1().Secrets(ns).Get(ctx, "meshid-issuer", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0 {
			return fmt.Errorf("the issuer Secret is not filled in yet")
		}
		return nil
	})
	cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := bundle.Parse([]byte(cm.Data["ca-bundle.crt"]))
	if err != nil {
		t.Fatal(err)
	}

	rendered, code := meshid(t, "", "install", "--cert-manager", "--webhook=false", "-n", ns)
	if code != 0 {
		t.Fatal(rendered)
	}
	addr, admin := freeAddr(t), freeAddr(t)
	args := append(deploymentArgs(t, rendered), "--kubeconfig", saKubeconfig(t, ns, "meshid-ca"), "--listen", addr, "--admin-listen", admin)
	startProcess(t, "meshid-ca", admin, args...)
	conn, err := rotation.DialCA(addr, anchors.X509Bundle(trustDomain), spiffeid.RequireFromString("spiffe://cluster.local/ns/"+ns+"/sa/meshid-ca"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := identityv1.NewIdentityClient(conn)
	wns := namespace(t, "cmworkload")
	serviceAccount(t, wns, "web")
	issuedBy := func() (*x509.Certificate, error) {
		got, err := rotation.Certify(ctx, client, token(t, wns, "web", audience, nil), time.Now())
		if err != nil {
			return nil, err
		}
		if _, _, err := x509svid.Verify(got.SVID.Certificates, anchors.X509Bundle(trustDomain)); err != nil {
			return nil, fmt.Errorf("the leaf does not chain to the anchor: %w", err)
		}
		return got.SVID.Certificates[1], nil
	}
	first, err := issuedBy()
	if err != nil {
		t.Fatal(err)
	}

	// cert-manager re-issues the issuer when its Secret goes.
	if err := e.client.CoreV1().Secrets(ns).Delete(ctx, "meshid-issuer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		got, err := issuedBy()
		if err != nil {
			return err
		}
		if got.Equal(first) {
			return fmt.Errorf("still issued by the first issuer (serial %s)", got.SerialNumber.Text(16))
		}
		return nil
	})

	// meshid check reads cert-manager's renewBefore for the issuer.
	out, _ = meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", ns, "--deployment", "")
	if !hasRow(out, "issuer "+ns+"/meshid-issuer", "OK") {
		t.Fatalf("check after cert-manager issued the issuer:\n%s", out)
	}
}

// TestWebhookCertManager: in `install --cert-manager`, cert-manager's real
// controller issues the webhook's serving certificate (from a webhook CA of
// its own), and meshid-webhook serves it from the mounted Secret.
func TestWebhookCertManager(t *testing.T) {
	t.Parallel()
	e := need(t)
	const ns = "meshid-cm-webhook"
	startCertManager(t, ns)
	if out, err := kubectl(t, "", "create", "namespace", ns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rendered, code := meshid(t, "", "install", "--cert-manager", "-n", ns)
	if code != 0 {
		t.Fatal(rendered)
	}
	var docs []string
	for _, doc := range strings.Split(rendered, "\n---\n") {
		if (strings.Contains(doc, "kind: Issuer") || strings.Contains(doc, "kind: Certificate")) && strings.Contains(doc, "meshid-webhook") {
			docs = append(docs, doc)
		}
	}
	if len(docs) != 4 {
		t.Fatalf("%d cert-manager objects for the webhook, want 4", len(docs))
	}
	if out, err := kubectl(t, strings.Join(docs, "\n---\n"), "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ctx := context.Background()
	var secret map[string][]byte
	eventually(t, 30*time.Second, func() error {
		s, err := e.client.CoreV1().Secrets(ns).Get(ctx, "meshid-webhook-tls", metav1.GetOptions{})
		if err != nil || len(s.Data["tls.crt"]) == 0 || len(s.Data["ca.crt"]) == 0 {
			return fmt.Errorf("cert-manager has not issued the webhook certificate yet: %v", err)
		}
		secret = s.Data
		return nil
	})
	dir := t.TempDir()
	for k, v := range secret {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secret["ca.crt"])
	runWebhook(t, func() error {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "meshid-webhook." + ns + ".svc"})
		if err != nil {
			return err
		}
		defer conn.Close()
		served := conn.ConnectionState().PeerCertificates[0]
		issued, err := parseCertificatePEM(secret["tls.crt"])
		if err != nil || !served.Equal(issued) {
			return fmt.Errorf("the webhook does not serve cert-manager's certificate (%v)", err)
		}
		return nil
	}, "-n", ns, "--listen", addr, "--cert-dir", dir, "--mutating-webhook=", "--validating-webhook=", "--proxy-image", "unused:1")
	out, _ := meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", ns, "--deployment", "")
	if !hasRow(out, "webhook certificate", "OK") {
		t.Fatalf("check does not report the webhook's certificate:\n%s", out)
	}
}

func parseCertificatePEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}
