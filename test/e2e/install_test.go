package e2e_test

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/rotation"
)

// kubectl runs the cluster's kubectl as admin.
func kubectl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(need(t).cpBin, "kubectl"), append([]string{"--kubeconfig", need(t).cluster.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// saKubeconfig writes a kubeconfig that authenticates as ns/sa with a token
// from TokenRequest, as a pod running as that service account would.
func saKubeconfig(t *testing.T, ns, sa string) string {
	t.Helper()
	tr, err := need(t).client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientcmd.LoadFromFile(need(t).cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	for name, c := range admin.Clusters {
		cfg.Clusters[name] = c
		cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
		cfg.Contexts[sa] = &clientcmdapi.Context{Cluster: name, AuthInfo: sa, Namespace: ns}
	}
	cfg.CurrentContext = sa
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// deploymentArgs finds the meshid-ca Deployment in rendered YAML and
// returns its container args.
func deploymentArgs(t *testing.T, rendered string) []string {
	t.Helper()
	for _, doc := range strings.Split(rendered, "\n---\n") {
		if !strings.Contains(doc, "kind: Deployment") {
			continue
		}
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0].Args
	}
	t.Fatalf("no Deployment in:\n%s", rendered)
	return nil
}

// TestInstall: the rendered control plane applies cleanly; meshid-ca, run
// with the Deployment's own flags and its own service account's RBAC,
// loads the material and issues; inconsistent material is refused before
// anything is rendered.
func TestInstall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	anchor := newAnchor(t, "install anchor")
	iss := newIssuer(t, anchor, "install issuer")
	files := map[string][]byte{"anchor.crt": anchor.CertPEM(), "issuer.crt": iss.CertPEM()}
	files["issuer.key"], _ = iss.KeyPEM()
	stranger := newIssuer(t, newAnchor(t, "stranger"), "stranger issuer")
	files["stranger.crt"] = stranger.CertPEM()
	files["stranger.key"], _ = stranger.KeyPEM()
	other := newAnchor(t, "other anchor")
	otherIss := newIssuer(t, other, "other issuer")
	files["other.crt"], files["other-issuer.crt"] = other.CertPEM(), otherIss.CertPEM()
	files["other-issuer.key"], _ = otherIss.KeyPEM()
	expired := issuertest.Anchor(t, issuertest.Name("expired"), issuertest.NotBefore(now.Add(-48*time.Hour)), issuertest.TTL(time.Hour))
	files["expired.crt"] = expired.CertPEM()
	leaf := issuertest.Certificate(t, iss, issuertest.NotCA(), issuertest.TTL(time.Hour))
	files["leaf.crt"] = bundle.Encode([]*x509.Certificate{leaf.Cert})
	for name, data := range files {
		issuertest.WriteFile(t, dir, name, data)
	}
	f := func(name string) string { return filepath.Join(dir, name) }

	refusals := []struct {
		name string
		args []string
		says string
	}{
		{"issuer from another anchor", []string{"--anchor-cert", f("anchor.crt"), "--issuer-cert", f("stranger.crt"), "--issuer-key", f("stranger.key")}, "does not chain"},
		{"key that does not match", []string{"--anchor-cert", f("anchor.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("stranger.key")}, "does not match"},
		{"expired anchor", []string{"--anchor-cert", f("expired.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("issuer.key")}, "not valid now"},
		{"non-CA anchor", []string{"--anchor-cert", f("leaf.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("issuer.key")}, "not a CA"},
	}
	for _, tt := range refusals {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(need(t).bin, "meshid"), append([]string{"install"}, tt.args...)...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if exitCode(err) != 1 || !strings.Contains(stderr.String(), tt.says) || stdout.Len() > 0 {
				t.Fatalf("exit %d, stdout %d bytes, stderr %q; want exit 1, nothing rendered, a message saying %q", exitCode(err), stdout.Len(), stderr.String(), tt.says)
			}
		})
	}

	t.Run("own material applies and serves", func(t *testing.T) {
		ns := "meshid-install"
		rendered, code := meshid(t, "", "install", "-n", ns, "--image", "example.invalid/meshid-ca:test", "--webhook=false",
			"--anchor-cert", f("anchor.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("issuer.key"))
		if code != 0 {
			t.Fatalf("install: %s", rendered)
		}
		if out, err := kubectl(t, rendered, "apply", "-f", "-"); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		// Run meshid-ca as the Deployment would: its flags, its service
		// account, its RBAC.
		args := append(deploymentArgs(t, rendered), "--kubeconfig", saKubeconfig(t, ns, "meshid-ca"))
		addr, admin := freeAddr(t), freeAddr(t)
		args = append(args, "--listen", addr, "--admin-listen", admin)
		startProcess(t, "meshid-ca", admin, args...)
		b, _ := bundle.Parse(anchor.CertPEM())
		conn, err := rotation.DialCA(addr, b.X509Bundle(trustDomain), spiffeid.RequireFromString("spiffe://cluster.local/ns/"+ns+"/sa/meshid-ca"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wns := namespace(t, "installed")
		serviceAccount(t, wns, "web")
		got, err := rotation.Certify(context.Background(), identityv1.NewIdentityClient(conn), token(t, wns, "web", audience, nil), time.Now())
		if err != nil {
			t.Fatalf("certify against the installed CA (with its own RBAC): %v", err)
		}
		if !got.SVID.Certificates[1].Equal(iss.Cert) {
			t.Fatal("not issued by the installed issuer")
		}
	})

	t.Run("the webhook objects pass the API server's validation", func(t *testing.T) {
		rendered, code := meshid(t, "", "install", "-n", "meshid-webhook-render", "--anchor-cert", f("anchor.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("issuer.key"))
		if code != 0 || !strings.Contains(rendered, "kind: ValidatingWebhookConfiguration") || !strings.Contains(rendered, "kind: CustomResourceDefinition") {
			t.Fatalf("install with the webhook: exit %d", code)
		}
		// A dry run (in a namespace that exists): a second set of
		// cluster-wide webhooks would call a webhook that no kubelet runs
		// here, for every other test.
		if out, err := kubectl(t, "", "create", "namespace", "meshid-webhook-render"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := kubectl(t, rendered, "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, out)
		}
	})

	t.Run("apply over an install takes only the anchor installed", func(t *testing.T) {
		e := need(t)
		ns := namespace(t, "reapply")
		args := []string{"install", "-n", ns, "--apply", "--webhook=false", "--kubeconfig", e.cluster.Kubeconfig, "--image", "example.invalid/meshid-ca:test"}
		own := []string{"--anchor-cert", f("anchor.crt"), "--issuer-cert", f("issuer.crt"), "--issuer-key", f("issuer.key")}
		for _, run := range []string{"first", "again, the same anchor"} {
			if out, code := meshid(t, "", append(args, own...)...); code != 0 || !strings.Contains(out, "configmap/meshid-trust-bundle applied") {
				t.Fatalf("install --apply, %s: exit %d\n%s", run, code, out)
			}
		}
		unchanged := trustUnchanged(t, ns)
		out, code := meshid(t, "", append(args, "--anchor-cert", f("other.crt"), "--issuer-cert", f("other-issuer.crt"), "--issuer-key", f("other-issuer.key"))...)
		if code != 1 || !strings.Contains(out, "holds other anchors") || !strings.Contains(out, bundle.Fingerprint(anchor.Cert)) ||
			!strings.Contains(out, "meshid rotate-anchor start --new-anchor-cert "+f("other.crt")) || strings.Contains(out, "namespace/"+ns+" applied") {
			t.Fatalf("install --apply with another anchor: exit %d\n%s", code, out)
		}
		unchanged(t)
	})

	t.Run("apply generates an anchor", func(t *testing.T) {
		ns := "meshid-apply"
		out, code := meshid(t, "", "install", "-n", ns, "--apply", "--webhook=false", "--kubeconfig", need(t).cluster.Kubeconfig, "--write-anchor-key", f("generated.key"))
		if code != 0 || !strings.Contains(out, "GENERATED A NEW TRUST ANCHOR") || !strings.Contains(out, "deployment/meshid-ca applied") {
			t.Fatalf("install --apply: exit %d\n%s", code, out)
		}
		if fi, err := os.Stat(f("generated.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("anchor key file: %v", err)
		}
		// Generating again would replace the anchor every workload trusts:
		// refused.
		if out, code := meshid(t, "", "install", "-n", ns, "--apply", "--webhook=false", "--kubeconfig", need(t).cluster.Kubeconfig); code != 1 || !strings.Contains(out, "already installed") {
			t.Fatalf("second install --apply with a generated anchor: exit %d\n%s", code, out)
		}
		// meshid check reads what was applied.
		out, _ = meshid(t, "", "check", "--kubeconfig", need(t).cluster.Kubeconfig, "-n", ns)
		if !hasRow(out, "issuer "+ns+"/meshid-issuer", "OK") || !hasRow(out, "ca replicas "+ns+"/meshid-ca", "FAIL") {
			t.Fatalf("check after install (no kubelet: no ready replicas):\n%s", out)
		}
	})
}

// trustUnchanged returns a check that ns's trust bundle and issuer Secret
// are still as they are now.
func trustUnchanged(t *testing.T, ns string) func(*testing.T) {
	t.Helper()
	ctx, client := context.Background(), need(t).client
	before, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issuerBefore, err := client.CoreV1().Secrets(ns).Get(ctx, "meshid-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return func(t *testing.T) {
		t.Helper()
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil || cm.ResourceVersion != before.ResourceVersion || cm.Data[bundle.Key] != before.Data[bundle.Key] {
			t.Fatalf("the trust bundle changed (%v)", err)
		}
		s, err := client.CoreV1().Secrets(ns).Get(ctx, "meshid-issuer", metav1.GetOptions{})
		if err != nil || s.ResourceVersion != issuerBefore.ResourceVersion {
			t.Fatalf("the issuer Secret changed (%v)", err)
		}
	}
}

// TestUnreachableCluster: install --apply and rotate-anchor against an API
// server that is not there say so once, with check's next step, and no
// client-go log lines.
func TestUnreachableCluster(t *testing.T) {
	t.Parallel()
	cfg, err := clientcmd.LoadFromFile(need(t).cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + freeAddr(t) // a closed loopback port
	}
	path := filepath.Join(t.TempDir(), "dead.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	klogLine := regexp.MustCompile(`(?m)^[IWEF]\d{4} |Unhandled Error|memcache\.go`)
	for _, args := range [][]string{
		{"install", "--apply", "--webhook=false"},
		{"rotate-anchor", "status"},
		{"rotate-anchor", "resume"},
		{"rotate-anchor", "abort"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, code := meshid(t, "", append(args, "--kubeconfig", path)...)
			if code != 1 || klogLine.MatchString(out) || strings.Count(out, "Error: ") != 1 || !strings.Contains(out, "connection refused") ||
				!strings.HasSuffix(strings.TrimSpace(out), "Is the API server up, and is this the cluster you mean? `kubectl --kubeconfig "+path+" cluster-info` tells") {
				t.Fatalf("exit %d, want 1, one error ending with check's hint, no klog lines:\n%s", code, out)
			}
		})
	}
}
