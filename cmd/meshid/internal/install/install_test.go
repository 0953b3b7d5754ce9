package install_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/install"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

const day = 24 * time.Hour

var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// options are install's flag defaults, at a fixed time, with no cluster.
func options() *install.Options {
	return &install.Options{
		Namespace: "meshid", Image: "ghcr.io/meshid/meshid-ca:latest", Replicas: 2,
		TrustDomain: identity.DefaultTrustDomain, Audience: identity.DefaultAudience, LeafTTL: 24 * time.Hour,
		Webhook: true, WebhookImage: "ghcr.io/meshid/meshid-webhook:latest", ProxyImage: "ghcr.io/meshid/meshid-proxy:latest",
		Output: "yaml",
		Clock:  clocktesting.NewFakePassiveClock(now),
		Connect: func(kube.Target, string) (*kube.Clients, error) {
			return nil, errors.New("install: this test has no cluster")
		},
	}
}

// material is an operator's own anchor and issuer, as files.
type material struct {
	anchor, issuer *issuer.KeyPair
	anchorCert     string
	anchorKey      string
	issuerCert     string
	issuerKey      string
}

func newMaterial(t *testing.T, dir string, anchor, iss *issuer.KeyPair) material {
	ak, err := anchor.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	ik, err := iss.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return material{
		anchor: anchor, issuer: iss,
		anchorCert: pkitest.File(t, dir, "anchor.crt", anchor.CertPEM()), anchorKey: pkitest.File(t, dir, "anchor.key", ak),
		issuerCert: pkitest.File(t, dir, "issuer.crt", iss.CertPEM()), issuerKey: pkitest.File(t, dir, "issuer.key", ik),
	}
}

func goodMaterial(t *testing.T) material {
	anchor := pkitest.CA(t, nil, "my anchor", now.Add(-day), 365*day)
	return newMaterial(t, t.TempDir(), anchor, pkitest.CA(t, anchor, "my issuer", now.Add(-day), 30*day))
}

// objects decodes what install printed, YAML or JSON.
func objects(t *testing.T, out []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	if bytes.HasPrefix(out, []byte("{")) {
		var list struct {
			Kind  string                   `json:"kind"`
			Items []map[string]interface{} `json:"items"`
		}
		if err := json.Unmarshal(out, &list); err != nil || list.Kind != "List" {
			t.Fatalf("not a JSON List (%v):\n%.300s", err, out)
		}
		for _, it := range list.Items {
			objs = append(objs, &unstructured.Unstructured{Object: it})
		}
		return objs
	}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var m map[string]interface{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("YAML: %v\n%.300s", err, doc)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// secretData returns a Secret's key, decoded.
func secretData(t *testing.T, s *unstructured.Unstructured, key string) []byte {
	t.Helper()
	v, _, _ := unstructured.NestedString(s.Object, "data", key)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) == 0 {
		t.Fatalf("Secret %s has no %s (%v)", s.GetName(), key, err)
	}
	return b
}

func bundleOf(t *testing.T, objs []*unstructured.Unstructured) *bundle.Bundle {
	t.Helper()
	cm := find(objs, "ConfigMap", manifest.BundleConfigMap)
	if cm == nil {
		t.Fatal("no trust-bundle ConfigMap rendered")
	}
	pem, _, _ := unstructured.NestedString(cm.Object, "data", bundle.Key)
	b, err := bundle.Parse([]byte(pem))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOwnMaterial(t *testing.T) {
	m := goodMaterial(t)
	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			o := options()
			o.AnchorCert, o.IssuerCert, o.IssuerKey, o.Output = m.anchorCert, m.issuerCert, m.issuerKey, format
			var out, stderr bytes.Buffer
			o.Stderr = &stderr
			if err := install.Run(context.Background(), o, &out); err != nil {
				t.Fatal(err)
			}
			objs := objects(t, out.Bytes())
			if b := bundleOf(t, objs); len(b.Anchors()) != 1 || !b.Contains(m.anchor.Cert) {
				t.Fatalf("the bundle is not the given anchor")
			}
			s := find(objs, "Secret", manifest.IssuerSecret)
			if s == nil {
				t.Fatal("no issuer Secret rendered")
			}
			if !bytes.Equal(secretData(t, s, "tls.crt"), m.issuer.CertPEM()) {
				t.Fatal("the issuer Secret does not hold the given issuer")
			}
			if find(objs, "Certificate", "meshid-issuer") != nil || find(objs, "Deployment", "meshid-webhook") == nil {
				t.Fatal("rendered cert-manager objects, or no webhook")
			}
			if stderr.Len() != 0 {
				t.Fatalf("notes about given material: %q", stderr.String())
			}
		})
	}
}

// stepCA makes step-ca the issuer source (the root file is not read by
// Validate).
func stepCA(o *install.Options) {
	o.StepCAURL, o.StepCARoot, o.StepCAProvisioner, o.StepCAKeySecret = "https://step-ca.pki:9000", "root.crt", "meshid", "step-ca-provisioner"
}

// TestStepCA: with step-ca, the bundle is step-ca's root, no issuer Secret
// is rendered, and meshid-ca runs with --issuer-source step-ca; an expired
// root is refused before anything is rendered.
func TestStepCA(t *testing.T) {
	root := pkitest.CA(t, nil, "step-ca root", now.Add(-day), 365*day)
	o := options()
	stepCA(o)
	o.StepCARoot, o.IssuerTTL = pkitest.File(t, t.TempDir(), "root_ca.crt", root.CertPEM()), 24*time.Hour
	var out bytes.Buffer
	if err := install.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out.Bytes())
	if b := bundleOf(t, objs); len(b.Anchors()) != 1 || !b.Contains(root.Cert) {
		t.Fatal("the bundle is not step-ca's root")
	}
	if find(objs, "Secret", manifest.IssuerSecret) != nil || find(objs, "ConfigMap", manifest.StepCARootConfigMap) == nil {
		t.Fatal("an issuer Secret rendered, or no step-ca root ConfigMap")
	}
	args, _, _ := unstructured.NestedSlice(find(objs, "Deployment", manifest.CAName).Object, "spec", "template", "spec", "containers")
	if got := fmt.Sprint(args); !strings.Contains(got, "--issuer-source=step-ca") || !strings.Contains(got, "--issuer-ttl=24h0m0s") || !strings.Contains(got, "--step-ca-url=https://step-ca.pki:9000") {
		t.Fatalf("meshid-ca's container %s, want the step-ca flags", got)
	}

	expired := pkitest.CA(t, nil, "old step-ca root", now.Add(-2*365*day), 365*day)
	o.StepCARoot = pkitest.File(t, t.TempDir(), "root_ca.crt", expired.CertPEM())
	out.Reset()
	if err := install.Run(context.Background(), o, &out); err == nil || !strings.Contains(err.Error(), "--step-ca-root") || out.Len() != 0 {
		t.Fatalf("an expired step-ca root: %v, %d bytes rendered", err, out.Len())
	}
}

func TestGenerated(t *testing.T) {
	tests := []struct {
		name        string
		mod         func(*install.Options, string)
		anchorTTL   time.Duration
		issuerTTL   time.Duration // 0: cert-manager issues it
		keyFile     bool
		noteDiscard bool
	}{
		{name: "defaults", mod: func(*install.Options, string) {}, anchorTTL: 3650 * day, issuerTTL: 90 * day, noteDiscard: true},
		{name: "lifetimes", mod: func(o *install.Options, _ string) { o.AnchorTTL, o.IssuerTTL = 400*day, 10*day }, anchorTTL: 400 * day, issuerTTL: 10 * day, noteDiscard: true},
		{name: "key kept", mod: func(o *install.Options, dir string) { o.WriteAnchorKey = filepath.Join(dir, "anchor.key") }, anchorTTL: 3650 * day, issuerTTL: 90 * day, keyFile: true},
		{name: "cert-manager", mod: func(o *install.Options, _ string) { o.CertManager = true }, anchorTTL: 3650 * day},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := options()
			tt.mod(o, dir)
			var out, stderr bytes.Buffer
			o.Stderr = &stderr
			if err := install.Run(context.Background(), o, &out); err != nil {
				t.Fatal(err)
			}
			objs := objects(t, out.Bytes())
			b := bundleOf(t, objs)
			anchor := b.Anchors()[0]
			if len(b.Anchors()) != 1 || !anchor.NotBefore.Equal(now.Add(-time.Hour)) || !anchor.NotAfter.Equal(now.Add(-time.Hour).Add(tt.anchorTTL)) {
				t.Fatalf("anchor valid %s to %s, want from an hour before now for %s", anchor.NotBefore, anchor.NotAfter, tt.anchorTTL)
			}
			notes := stderr.String()
			if !strings.Contains(notes, `GENERATED A NEW TRUST ANCHOR "meshid trust anchor"`) || !strings.Contains(notes, "fingerprint "+bundle.Fingerprint(anchor)) {
				t.Fatalf("notes do not name the new anchor and its fingerprint:\n%s", notes)
			}
			if got := strings.Contains(notes, "private key is discarded"); got != tt.noteDiscard {
				t.Fatalf("note that the key is discarded: %v, want %v:\n%s", got, tt.noteDiscard, notes)
			}
			if tt.keyFile {
				checkKeyFile(t, o.WriteAnchorKey, anchor)
			}
			if tt.issuerTTL == 0 {
				if find(objs, "Secret", manifest.IssuerSecret) != nil || find(objs, "Certificate", manifest.IssuerSecret) == nil {
					t.Fatal("cert-manager mode rendered the issuer Secret, or no Certificate for it")
				}
				kp, err := issuer.Parse(secretData(t, find(objs, "Secret", manifest.AnchorSecret), "tls.crt"), secretData(t, find(objs, "Secret", manifest.AnchorSecret), "tls.key"))
				if err != nil || !kp.Cert.Equal(anchor) {
					t.Fatalf("the anchor Secret for cert-manager is not the generated anchor and its key (%v)", err)
				}
				return
			}
			s := find(objs, "Secret", manifest.IssuerSecret)
			iss, err := issuer.Parse(secretData(t, s, "tls.crt"), secretData(t, s, "tls.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := iss.Verify(b, now); err != nil {
				t.Fatalf("the generated issuer does not chain to the generated anchor: %v", err)
			}
			if !iss.Cert.NotAfter.Equal(now.Add(-time.Hour).Add(tt.issuerTTL)) || !iss.Cert.MaxPathLenZero {
				t.Fatalf("issuer valid until %s (path length zero %v), want %s after an hour before now", iss.Cert.NotAfter, iss.Cert.MaxPathLenZero, tt.issuerTTL)
			}
		})
	}
}

func checkKeyFile(t *testing.T, path string, anchor *x509.Certificate) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.Parse(bundle.Encode([]*x509.Certificate{anchor}), key); err != nil {
		t.Fatalf("the saved key is not the anchor's: %v", err)
	}
}

func TestCertManagerOwnAnchor(t *testing.T) {
	m := goodMaterial(t)
	o := options()
	o.CertManager, o.AnchorCert, o.AnchorKey = true, m.anchorCert, m.anchorKey
	var out, stderr bytes.Buffer
	o.Stderr = &stderr
	if err := install.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out.Bytes())
	if b := bundleOf(t, objs); !b.Contains(m.anchor.Cert) || len(b.Anchors()) != 1 {
		t.Fatal("the bundle is not the given anchor")
	}
	if !bytes.Equal(secretData(t, find(objs, "Secret", manifest.AnchorSecret), "tls.crt"), m.anchor.CertPEM()) || stderr.Len() != 0 {
		t.Fatalf("the anchor Secret is not the given anchor, or notes %q", stderr.String())
	}
}

// TestRefusals: inconsistent material is refused before anything is
// rendered, with what was wrong.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	good := goodMaterial(t)
	expiredAnchor := pkitest.CA(t, nil, "expired anchor", now.Add(-400*day), 365*day)
	futureAnchor := pkitest.CA(t, nil, "future anchor", now.Add(day), 365*day)
	stranger := pkitest.CA(t, nil, "stranger", now.Add(-day), 365*day)
	leaf, leafKey := pkitest.Leaf(t, good.issuer, spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain), "/ns/shop/sa/web"), now.Add(-time.Hour), day)
	expired := newMaterial(t, t.TempDir(), expiredAnchor, pkitest.CA(t, expiredAnchor, "issuer", now.Add(-400*day), 365*day))
	future := newMaterial(t, t.TempDir(), futureAnchor, pkitest.CA(t, futureAnchor, "issuer", now.Add(day), 30*day))
	foreign := newMaterial(t, t.TempDir(), good.anchor, pkitest.CA(t, stranger, "foreign issuer", now.Add(-day), 30*day))
	lapsed := newMaterial(t, t.TempDir(), good.anchor, pkitest.CA(t, good.anchor, "lapsed issuer", now.Add(-31*day), 30*day))
	leafFile := pkitest.File(t, dir, "leaf.crt", pkitest.PEM(leaf...))
	leafKeyFile := pkitest.File(t, dir, "leaf.key", pkitest.KeyPEM(t, leafKey))
	missing := filepath.Join(dir, "missing.pem")

	own := func(anchorCert, issuerCert, issuerKey string) func(*install.Options) {
		return func(o *install.Options) { o.AnchorCert, o.IssuerCert, o.IssuerKey = anchorCert, issuerCert, issuerKey }
	}
	cm := func(anchorCert, anchorKey string) func(*install.Options) {
		return func(o *install.Options) { o.CertManager, o.AnchorCert, o.AnchorKey = true, anchorCert, anchorKey }
	}
	tests := []struct {
		name    string
		mod     func(*install.Options)
		message string
	}{
		{name: "anchor file missing", mod: own(missing, good.issuerCert, good.issuerKey), message: "install: open " + missing},
		{name: "anchor expired", mod: own(expired.anchorCert, expired.issuerCert, expired.issuerKey), message: "install: --anchor-cert " + expired.anchorCert + ": anchor CN=expired anchor,O=meshid is not valid now"},
		{name: "anchor not valid yet", mod: own(future.anchorCert, future.issuerCert, future.issuerKey), message: "anchor CN=future anchor,O=meshid is not valid now"},
		{name: "anchor is not a CA", mod: own(leafFile, good.issuerCert, good.issuerKey), message: "install: --anchor-cert " + leafFile + ": "},
		{name: "issuer file missing", mod: own(good.anchorCert, missing, good.issuerKey), message: "install: open " + missing},
		{name: "issuer key file missing", mod: own(good.anchorCert, good.issuerCert, missing), message: "install: open " + missing},
		{name: "issuer key does not match", mod: own(good.anchorCert, good.issuerCert, good.anchorKey), message: "install: --issuer-cert/--issuer-key: "},
		{name: "issuer is not a CA", mod: own(good.anchorCert, leafFile, leafKeyFile), message: "install: --issuer-cert/--issuer-key: "},
		{name: "issuer from another anchor", mod: own(foreign.anchorCert, foreign.issuerCert, foreign.issuerKey), message: "install: the issuer cannot be used with these anchors: "},
		{name: "issuer expired", mod: own(lapsed.anchorCert, lapsed.issuerCert, lapsed.issuerKey), message: "install: the issuer cannot be used with these anchors: "},
		{name: "cert-manager anchor file missing", mod: cm(missing, good.anchorKey), message: "install: open " + missing},
		{name: "cert-manager anchor key file missing", mod: cm(good.anchorCert, missing), message: "install: open " + missing},
		{name: "cert-manager anchor key does not match", mod: cm(good.anchorCert, good.issuerKey), message: "install: --anchor-cert/--anchor-key: "},
		{name: "cert-manager anchor expired", mod: cm(expired.anchorCert, expired.anchorKey), message: "install: --anchor-cert " + expired.anchorCert + ": anchor CN=expired anchor,O=meshid is not valid now"},
		{name: "anchor key file unwritable", mod: func(o *install.Options) { o.WriteAnchorKey = filepath.Join(missing, "anchor.key") }, message: missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options()
			tt.mod(o)
			if err := o.Validate(); err != nil {
				t.Fatalf("Validate = %v; the case should pass it and be refused by Run", err)
			}
			var out bytes.Buffer
			err := install.Run(context.Background(), o, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.message)
			}
			if out.Len() != 0 {
				t.Fatalf("rendered despite the refusal:\n%.300s", out.String())
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*install.Options)
		message string // empty: valid
	}{
		{name: "generate", mod: func(*install.Options) {}},
		{name: "generate, keep the key", mod: func(o *install.Options) { o.WriteAnchorKey = "k" }},
		{name: "own material", mod: func(o *install.Options) { o.AnchorCert, o.IssuerCert, o.IssuerKey = "a", "i", "k" }},
		{name: "cert-manager", mod: func(o *install.Options) { o.CertManager = true }},
		{name: "cert-manager, own anchor", mod: func(o *install.Options) { o.CertManager, o.AnchorCert, o.AnchorKey = true, "a", "k" }},
		{name: "json", mod: func(o *install.Options) { o.Output = "json" }},
		{name: "bad output", mod: func(o *install.Options) { o.Output = "table" }, message: `-o "table": use yaml or json`},
		{name: "cert-manager with an issuer", mod: func(o *install.Options) { o.CertManager, o.IssuerCert = true, "i" }, message: "--cert-manager manages the issuer itself"},
		{name: "issuer without key", mod: func(o *install.Options) { o.AnchorCert, o.IssuerCert = "a", "i" }, message: "your own material takes --anchor-cert, --issuer-cert and --issuer-key together"},
		{name: "issuer key alone", mod: func(o *install.Options) { o.IssuerKey = "k" }, message: "your own material takes"},
		{name: "issuer without anchor", mod: func(o *install.Options) { o.IssuerCert, o.IssuerKey = "i", "k" }, message: "your own material takes"},
		{name: "cert-manager anchor without key", mod: func(o *install.Options) { o.CertManager, o.AnchorCert = true, "a" }, message: "--cert-manager with your own anchor takes --anchor-cert and --anchor-key together"},
		{name: "cert-manager anchor key alone", mod: func(o *install.Options) { o.CertManager, o.AnchorKey = true, "k" }, message: "--cert-manager with your own anchor takes"},
		{name: "own material with an anchor key", mod: func(o *install.Options) {
			o.AnchorCert, o.AnchorKey, o.IssuerCert, o.IssuerKey = "a", "k", "i", "k2"
		}, message: "--anchor-key only applies with --cert-manager"},
		{name: "anchor alone", mod: func(o *install.Options) { o.AnchorCert = "a" }, message: "--anchor-cert alone is not enough"},
		{name: "anchor key alone", mod: func(o *install.Options) { o.AnchorKey = "k" }, message: "--anchor-cert alone is not enough"},
		{name: "write key with own material", mod: func(o *install.Options) {
			o.AnchorCert, o.IssuerCert, o.IssuerKey, o.WriteAnchorKey = "a", "i", "k", "w"
		}, message: "--write-anchor-key only applies when install generates the anchor"},
		{name: "write key with cert-manager's own anchor", mod: func(o *install.Options) {
			o.CertManager, o.AnchorCert, o.AnchorKey, o.WriteAnchorKey = true, "a", "k", "w"
		}, message: "--write-anchor-key only applies"},
		{name: "step-ca", mod: stepCA},
		{name: "step-ca and cert-manager", mod: func(o *install.Options) { stepCA(o); o.CertManager = true }, message: "--step-ca-url gives each meshid-ca replica its issuer"},
		{name: "step-ca and an issuer", mod: func(o *install.Options) { stepCA(o); o.AnchorCert, o.IssuerCert, o.IssuerKey = "a", "i", "k" }, message: "drop --cert-manager, --anchor-*"},
		{name: "step-ca without the key Secret", mod: func(o *install.Options) { stepCA(o); o.StepCAKeySecret = "" }, message: "--step-ca-provisioner-key-secret together"},
		{name: "step-ca root alone", mod: func(o *install.Options) { o.StepCARoot = "root.crt" }, message: "step-ca takes --step-ca-url"},
		{name: "no replicas", mod: func(o *install.Options) { o.Replicas = 0 }, message: "--replicas must be at least 1"},
		{name: "bad trust domain", mod: func(o *install.Options) { o.TrustDomain = "Not Valid" }, message: `--trust-domain "Not Valid"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options()
			tt.mod(o)
			clitest.WantUsage(t, "Validate", o.Validate(), tt.message)
		})
	}
}

// cluster is a fake API server for --apply: a RESTMapper serving the core
// kinds (and cert-manager's when asked), and a dynamic client that records
// every apply.
type cluster struct {
	clients *kube.Clients
	applied []k8stesting.PatchAction
	connect []string
}

func newCluster(t *testing.T, certManager bool, objs ...runtime.Object) *cluster {
	mapper := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gv      string
		kind    string
		cluster bool
	}{
		{"v1", "Namespace", true}, {"v1", "ServiceAccount", false}, {"v1", "ConfigMap", false}, {"v1", "Secret", false}, {"v1", "Service", false},
		{"apps/v1", "Deployment", false},
		{"rbac.authorization.k8s.io/v1", "Role", false}, {"rbac.authorization.k8s.io/v1", "RoleBinding", false},
		{"rbac.authorization.k8s.io/v1", "ClusterRole", true}, {"rbac.authorization.k8s.io/v1", "ClusterRoleBinding", true},
		{"apiextensions.k8s.io/v1", "CustomResourceDefinition", true},
		{"admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", true}, {"admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", true},
		{"admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", true}, {"admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", true},
		{"cert-manager.io/v1", "Certificate", false}, {"cert-manager.io/v1", "Issuer", false},
	} {
		if strings.HasPrefix(k.gv, "cert-manager") && !certManager {
			continue
		}
		gv, _ := schema.ParseGroupVersion(k.gv)
		scope := meta.RESTScopeNamespace
		if k.cluster {
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gv.WithKind(k.kind), scope)
	}
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), objs...)
	c := &cluster{clients: &kube.Clients{Dynamic: dyn, Mapper: mapper}}
	dyn.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		c.applied = append(c.applied, p)
		return true, &unstructured.Unstructured{Object: map[string]interface{}{}}, nil
	})
	return c
}

func (c *cluster) options(o *install.Options) *install.Options {
	o.Apply, o.Cluster = true, kube.Target{Kubeconfig: "/path/kubeconfig", Context: "prod"}
	o.Connect = func(t kube.Target, agent string) (*kube.Clients, error) {
		c.connect = append(c.connect, t.Kubeconfig+" "+t.Context+" "+agent)
		return c.clients, nil
	}
	return o
}

func TestApply(t *testing.T) {
	m := goodMaterial(t)
	c := newCluster(t, false)
	o := c.options(options())
	o.AnchorCert, o.IssuerCert, o.IssuerKey = m.anchorCert, m.issuerCert, m.issuerKey
	var out bytes.Buffer
	if err := install.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	if len(c.connect) != 1 || c.connect[0] != "/path/kubeconfig prod meshid-install" {
		t.Fatalf("Connect calls %q, want one for /path/kubeconfig, context prod, as meshid-install", c.connect)
	}
	// The same objects, in the same order, as install prints.
	printed := options()
	printed.AnchorCert, printed.IssuerCert, printed.IssuerKey = m.anchorCert, m.issuerCert, m.issuerKey
	var rendered bytes.Buffer
	if err := install.Run(context.Background(), printed, &rendered); err != nil {
		t.Fatal(err)
	}
	want := objects(t, rendered.Bytes())
	if len(c.applied) != len(want) {
		t.Fatalf("applied %d objects, want %d", len(c.applied), len(want))
	}
	var lines []string
	for i, p := range c.applied {
		w := want[i]
		if p.GetPatchType() != types.ApplyPatchType || p.GetName() != w.GetName() || p.GetNamespace() != w.GetNamespace() {
			t.Fatalf("apply %d: %s %s/%s, want a server-side apply of %s %s/%s", i, p.GetPatchType(), p.GetNamespace(), p.GetName(), w.GetKind(), w.GetNamespace(), w.GetName())
		}
		var got unstructured.Unstructured
		if err := got.UnmarshalJSON(p.GetPatch()); err != nil || got.GetKind() != w.GetKind() {
			t.Fatalf("apply %d: patch of kind %q (%v), want %s", i, got.GetKind(), err, w.GetKind())
		}
		lines = append(lines, strings.ToLower(w.GetKind())+"/"+w.GetName()+" applied")
	}
	if got := strings.TrimSuffix(out.String(), "\n"); got != strings.Join(lines, "\n") {
		t.Fatalf("printed\n%s\nwant\n%s", got, strings.Join(lines, "\n"))
	}
	if !strings.HasPrefix(out.String(), "namespace/meshid applied\n") {
		t.Fatalf("the namespace is not applied first:\n%s", out.String())
	}
}

func TestApplyFieldManager(t *testing.T) {
	c := newCluster(t, false)
	var opts []metav1.PatchOptions
	c.clients.Dynamic.(*dynamicfake.FakeDynamicClient).PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		opts = append(opts, a.(k8stesting.PatchActionImpl).PatchOptions)
		return false, nil, nil
	})
	if err := install.Run(context.Background(), c.options(options()), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range opts {
		if p.FieldManager != "meshid" || p.Force == nil || !*p.Force {
			t.Fatalf("applied with %+v, want field manager meshid, forced", p)
		}
	}
	if len(opts) == 0 {
		t.Fatal("nothing applied")
	}
}

// TestApplyRefusals: what --apply refuses, and that it applies nothing then
// (or nothing after the object it could not apply).
func TestApplyRefusals(t *testing.T) {
	existing := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]interface{}{"namespace": "meshid", "name": manifest.BundleConfigMap},
	}}
	tests := []struct {
		name    string
		cluster func(*testing.T) *cluster
		mod     func(*install.Options)
		message string
		applied int // objects applied before the refusal
	}{
		{
			name:    "generated anchor over an install",
			cluster: func(t *testing.T) *cluster { return newCluster(t, true, existing) },
			mod:     func(*install.Options) {},
			message: "install: meshid is already installed in namespace meshid (ConfigMap meshid-trust-bundle exists); a generated anchor would replace the one every workload trusts",
		},
		{
			name:    "generated anchor for cert-manager over an install",
			cluster: func(t *testing.T) *cluster { return newCluster(t, true, existing) },
			mod:     func(o *install.Options) { o.CertManager = true },
			message: "install: meshid is already installed",
		},
		{
			name:    "cert-manager CRDs missing",
			cluster: func(t *testing.T) *cluster { return newCluster(t, false) },
			mod:     func(o *install.Options) { o.CertManager = true },
			message: "install: the cluster does not serve Issuer (cert-manager.io/v1): install cert-manager's CRDs first",
			applied: 0, // nothing: a re-run must not find a half install
		},
		{
			name: "apply refused",
			cluster: func(t *testing.T) *cluster {
				c := newCluster(t, false)
				c.clients.Dynamic.(*dynamicfake.FakeDynamicClient).PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("admission says no")
				})
				return c
			},
			mod:     func(*install.Options) {},
			message: "install: apply Deployment meshid-ca: admission says no",
			applied: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cluster(t)
			o := c.options(options())
			tt.mod(o)
			var out bytes.Buffer
			err := install.Run(context.Background(), o, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.message)
			}
			switch {
			case tt.applied == 0 && len(c.applied) != 0:
				t.Fatalf("applied %d objects before refusing", len(c.applied))
			case tt.applied == -1 && (len(c.applied) == 0 || strings.Count(out.String(), "\n") != len(c.applied)):
				t.Fatalf("applied %d objects, printed\n%s", len(c.applied), out.String())
			}
		})
	}
}

// bundleConfigMap is an installed trust bundle holding pem.
func bundleConfigMap(pem []byte) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]interface{}{"namespace": "meshid", "name": manifest.BundleConfigMap},
		"data":     map[string]interface{}{bundle.Key: string(pem)},
	}}
}

// TestApplyOverAnInstall: --apply with the operator's own anchor over an
// install re-applies when the installed bundle holds the same anchors, and
// otherwise refuses before applying anything, naming the anchors and the
// rotate-anchor command that changes them without an outage.
func TestApplyOverAnInstall(t *testing.T) {
	m := goodMaterial(t)
	other := goodMaterial(t)
	both := bundle.Encode([]*x509.Certificate{other.anchor.Cert, m.anchor.Cert})
	tests := []struct {
		name        string
		installed   []byte
		certManager bool
		says        []string // nil: applies
	}{
		{name: "same anchor", installed: m.anchor.CertPEM()},
		{
			name: "different anchor", installed: other.anchor.CertPEM(),
			says: []string{
				"holds other anchors (\"my anchor\" SHA-256 " + bundle.Fingerprint(other.anchor.Cert) + ") than --anchor-cert " + m.anchorCert,
				"replace the anchor every workload trusts at once",
				"meshid rotate-anchor start --new-anchor-cert " + m.anchorCert + " --new-anchor-key ANCHOR.key -n meshid",
				"Nothing was applied",
			},
		},
		{
			name: "different anchor, cert-manager", installed: other.anchor.CertPEM(), certManager: true,
			says: []string{"meshid rotate-anchor start --cert-manager --new-anchor-cert " + m.anchorCert + " --new-anchor-key " + m.anchorKey + " -n meshid"},
		},
		{
			name: "a rotation's two anchors", installed: both,
			says: []string{"holds more anchors", "meshid rotate-anchor status -n meshid", "nothing was applied"},
		},
		{
			name: "not a bundle", installed: []byte("not PEM"),
			says: []string{"is not a valid bundle", "install will not write over it", "meshid check -n meshid", "nothing was applied"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, true, bundleConfigMap(tt.installed))
			o := c.options(options())
			o.CertManager = tt.certManager
			if tt.certManager {
				o.AnchorCert, o.AnchorKey = m.anchorCert, m.anchorKey
			} else {
				o.AnchorCert, o.IssuerCert, o.IssuerKey = m.anchorCert, m.issuerCert, m.issuerKey
			}
			var out bytes.Buffer
			err := install.Run(context.Background(), o, &out)
			if tt.says == nil {
				if err != nil || len(c.applied) == 0 {
					t.Fatalf("Run = %v, applied %d objects; want a re-apply", err, len(c.applied))
				}
				return
			}
			for _, want := range tt.says {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Run = %v, want an error containing %q", err, want)
				}
			}
			if len(c.applied) != 0 || out.Len() != 0 {
				t.Fatalf("applied %d objects, printed %q, before refusing", len(c.applied), out.String())
			}
		})
	}
	t.Run("the bundle cannot be read", func(t *testing.T) {
		c := newCluster(t, false)
		c.clients.Dynamic.(*dynamicfake.FakeDynamicClient).PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("configmaps is forbidden")
		})
		o := c.options(options())
		o.AnchorCert, o.IssuerCert, o.IssuerKey = m.anchorCert, m.issuerCert, m.issuerKey
		err := install.Run(context.Background(), o, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "read ConfigMap meshid/meshid-trust-bundle, to know whether meshid is installed there: configmaps is forbidden") || len(c.applied) != 0 {
			t.Fatalf("Run = %v, applied %d; want the read error, nothing applied", err, len(c.applied))
		}
	})
}

func TestApplyConnectError(t *testing.T) {
	o := options()
	o.Apply = true
	var out bytes.Buffer
	if err := install.Run(context.Background(), o, &out); err == nil || !strings.Contains(err.Error(), "this test has no cluster") || out.Len() != 0 {
		t.Fatalf("Run = %v, printed %q; want the Connect error", err, out.String())
	}
}

// TestKeyFileRefusals: --write-anchor-key never replaces a file and never
// writes into a folder that is not there; either is refused before an
// anchor is generated: nothing is printed, rendered or written.
func TestKeyFileRefusals(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "anchor.key")
	if err := os.WriteFile(existing, []byte("the only copy of last year's anchor key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, message string
	}{
		{name: "file exists", path: existing, message: "--write-anchor-key " + existing + ": already exists"},
		{name: "directory missing", path: filepath.Join(dir, "keys", "anchor.key"), message: "the directory " + filepath.Join(dir, "keys") + " does not exist"},
	}
	for _, tt := range tests {
		for _, apply := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s apply=%v", tt.name, apply), func(t *testing.T) {
				c := newCluster(t, false)
				o := options()
				if apply {
					o = c.options(o)
				}
				o.WriteAnchorKey = tt.path
				var out, stderr bytes.Buffer
				o.Stderr = &stderr
				err := install.Run(context.Background(), o, &out)
				if err == nil || !strings.Contains(err.Error(), tt.message) {
					t.Fatalf("Run = %v, want %q", err, tt.message)
				}
				if out.Len() != 0 || stderr.Len() != 0 || len(c.applied) != 0 || len(c.connect) != 0 {
					t.Fatalf("printed %q, noted %q, applied %d, connected %d times", out.String(), stderr.String(), len(c.applied), len(c.connect))
				}
				if got, _ := os.ReadFile(existing); string(got) != "the only copy of last year's anchor key" {
					t.Fatalf("the existing key file was changed to %q", got)
				}
				if _, err := os.Stat(filepath.Join(dir, "keys")); err == nil {
					t.Fatal("created the missing directory")
				}
			})
		}
	}
}

// TestApplyRefusesBeforeGenerating: --apply over an install, or onto a
// cluster without cert-manager, refuses before the anchor is generated: no
// note about a new anchor, no key file, nothing applied.
func TestApplyRefusesBeforeGenerating(t *testing.T) {
	existing := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]interface{}{"namespace": "meshid", "name": manifest.BundleConfigMap},
	}}
	tests := []struct {
		name        string
		cluster     *cluster
		certManager bool
		message     string
	}{
		{name: "over an install", cluster: newCluster(t, true, existing), message: "meshid is already installed in namespace meshid"},
		{name: "no cert-manager", cluster: newCluster(t, false), certManager: true, message: "the cluster does not serve Issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.cluster.options(options())
			o.CertManager = tt.certManager
			o.WriteAnchorKey = filepath.Join(t.TempDir(), "anchor.key")
			var out, stderr bytes.Buffer
			o.Stderr = &stderr
			err := install.Run(context.Background(), o, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) || !strings.Contains(err.Error(), "nothing was generated or applied") {
				t.Fatalf("Run = %v, want %q, and that nothing was generated", err, tt.message)
			}
			if _, err := os.Stat(o.WriteAnchorKey); err == nil {
				t.Fatal("wrote a key file for an anchor that was refused")
			}
			if stderr.Len() != 0 || out.Len() != 0 || len(tt.cluster.applied) != 0 {
				t.Fatalf("noted %q, printed %q, applied %d objects", stderr.String(), out.String(), len(tt.cluster.applied))
			}
		})
	}
}

// TestApplyJSON: --apply -o json prints one JSON object per applied object.
func TestApplyJSON(t *testing.T) {
	c := newCluster(t, false)
	o := c.options(options())
	o.Output = "json"
	var out bytes.Buffer
	if err := install.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(c.applied) || len(lines) == 0 {
		t.Fatalf("%d lines for %d objects:\n%s", len(lines), len(c.applied), out.String())
	}
	for i, l := range lines {
		var a install.Applied
		if err := json.Unmarshal([]byte(l), &a); err != nil || a.Kind == "" || a.Name != c.applied[i].GetName() {
			t.Fatalf("line %d %q (%v), want the object %s", i, l, err, c.applied[i].GetName())
		}
	}
	var first install.Applied
	_ = json.Unmarshal([]byte(lines[0]), &first)
	if first != (install.Applied{Kind: "Namespace", Name: "meshid"}) {
		t.Fatalf("first line %+v, want the namespace", first)
	}
}

// TestDocumentedObjects: docs/cli.md's table of what install renders names
// every object of every mode (NS standing for the namespace).
func TestDocumentedObjects(t *testing.T) {
	doc, err := os.ReadFile("../../../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## `meshid install`")
	table, _, _ = strings.Cut(table, "Trust material, one of three ways")
	for _, mod := range []func(*install.Options){
		func(*install.Options) {},
		func(o *install.Options) { o.CertManager = true },
		func(o *install.Options) { o.PrometheusOperator = true },
		func(o *install.Options) { o.Federation = true },
	} {
		o := options()
		o.Namespace = "other"
		mod(o)
		var out bytes.Buffer
		if err := install.Run(context.Background(), o, &out); err != nil {
			t.Fatal(err)
		}
		for _, obj := range objects(t, out.Bytes()) {
			name := strings.ReplaceAll(obj.GetName(), "other", "NS")
			if !strings.Contains(table, obj.GetKind()) && !strings.Contains(table, strings.TrimSuffix(obj.GetKind(), "Binding")) || !strings.Contains(table, "`"+name+"`") {
				t.Errorf("docs/cli.md's install table does not list %s `%s`", obj.GetKind(), name)
			}
		}
	}
}
