package certmanager_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/issuer/upstream"
	"github.com/meshid/meshid/issuer/upstream/certmanager"
)

const ns = "meshid"

func newClient() *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{certmanager.Resource: "CertificateRequestList"})
}

// issuerLoop plays cert-manager on the fake: for each request created, it
// lets decide set its conditions (and, when Ready, signs it with root).
func issuerLoop(t *testing.T, c *dynamicfake.FakeDynamicClient, root *issuer.KeyPair, decide func(cr *cmapi.CertificateRequest)) (seen <-chan *cmapi.CertificateRequest) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	res := c.Resource(certmanager.Resource).Namespace(ns)
	w, err := res.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *cmapi.CertificateRequest, 10)
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.ResultChan():
				if ev.Type != watch.Added {
					continue
				}
				var cr cmapi.CertificateRequest
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(ev.Object.(*unstructured.Unstructured).Object, &cr); err != nil {
					t.Error(err)
					return
				}
				out <- cr.DeepCopy()
				decide(&cr)
				if ready(&cr) {
					sign(t, &cr, root)
				}
				obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&cr)
				if _, err := res.UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		}
	}()
	return out
}

func ready(cr *cmapi.CertificateRequest) bool {
	for _, c := range cr.Status.Conditions {
		if c.Type == cmapi.CertificateRequestConditionReady && c.Status == cmmeta.ConditionTrue {
			return true
		}
	}
	return false
}

func set(cr *cmapi.CertificateRequest, typ cmapi.CertificateRequestConditionType, status cmmeta.ConditionStatus, reason, msg string) {
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{Type: typ, Status: status, Reason: reason, Message: msg})
}

func issue(cr *cmapi.CertificateRequest) {
	set(cr, cmapi.CertificateRequestConditionApproved, cmmeta.ConditionTrue, "cert-manager.io", "approved")
	set(cr, cmapi.CertificateRequestConditionReady, cmmeta.ConditionTrue, cmapi.CertificateRequestReasonIssued, "issued")
}

// sign signs cr's CSR as cert-manager's CA issuer does: a CA certificate
// for its duration, the issuer's certificate as status.ca.
func sign(t *testing.T, cr *cmapi.CertificateRequest, root *issuer.KeyPair) {
	b, _ := pem.Decode(cr.Spec.Request)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Error(err)
		return
	}
	serial, _ := issuer.NewSerial()
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(cr.Spec.Duration.Duration),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: cr.Spec.IsCA,
	}, root.Cert, csr.PublicKey, root.Key)
	if err != nil {
		t.Error(err)
		return
	}
	cr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cr.Status.CA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Cert.Raw})
}

func newAuthority(t *testing.T, c *dynamicfake.FakeDynamicClient, mod func(*certmanager.Config)) *certmanager.Authority {
	t.Helper()
	cfg := certmanager.Config{Client: c, Namespace: ns, IssuerName: "corp-ca", Replica: "meshid-ca-0", Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	a, err := certmanager.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// request makes a new key and its request for 48 h.
func request(t *testing.T) (upstream.Request, *x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	key, err := upstream.MemoryKeys{}.NewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, err := upstream.NewRequest(key, pkix.Name{CommonName: "meshid issuer"}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(req.CSR)
	return req, csr, key
}

func gone(t *testing.T, c *dynamicfake.FakeDynamicClient, name string) {
	t.Helper()
	_, err := c.Resource(certmanager.Resource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("CertificateRequest %s still there after Sign (%v): finished requests must be deleted", name, err)
	}
}

// TestSignIssued: the request carries the CSR, isCA, the CA usages, the
// duration, the issuer, the replica's label and the owner; the answer
// passes upstream.Check; the request is deleted afterwards.
func TestSignIssued(t *testing.T) {
	root := issuertest.Anchor(t)
	c := newClient()
	seen := issuerLoop(t, c, root, issue)
	owner := &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "meshid-ca-0", UID: "1234"}
	a := newAuthority(t, c, func(cfg *certmanager.Config) { cfg.Owner = owner })
	req, csr, key := request(t)

	ans, err := a.Sign(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := upstream.Check(ans, key.Public(), time.Now(), time.Hour); err != nil {
		t.Fatalf("the answer does not pass the upstream checks: %v", err)
	}
	if len(ans.Roots) != 1 || !ans.Roots[0].Equal(root.Cert) || len(ans.Chain) != 0 {
		t.Errorf("roots %d, chain %d: want status.ca as the one root and no chain", len(ans.Roots), len(ans.Chain))
	}
	cr := <-seen
	want := certmanager.Name("meshid-ca-0", csr.RawSubjectPublicKeyInfo)
	b, _ := pem.Decode(cr.Spec.Request)
	switch {
	case cr.Name != want:
		t.Errorf("name %q, want %q", cr.Name, want)
	case b == nil || string(b.Bytes) != string(req.CSR):
		t.Errorf("spec.request is not the CSR as PEM")
	case !cr.Spec.IsCA:
		t.Errorf("isCA is false")
	case len(cr.Spec.Usages) != 3 || cr.Spec.Usages[0] != cmapi.UsageCertSign || cr.Spec.Usages[1] != cmapi.UsageCRLSign || cr.Spec.Usages[2] != cmapi.UsageDigitalSignature:
		t.Errorf("usages %v", cr.Spec.Usages)
	case cr.Spec.Duration == nil || cr.Spec.Duration.Duration != 48*time.Hour:
		t.Errorf("duration %v, want 48h", cr.Spec.Duration)
	case cr.Spec.IssuerRef != cmmeta.IssuerReference{Name: "corp-ca", Kind: "Issuer", Group: "cert-manager.io"}:
		t.Errorf("issuerRef %+v", cr.Spec.IssuerRef)
	case cr.Labels[certmanager.LabelReplica] != "meshid-ca-0":
		t.Errorf("labels %v", cr.Labels)
	case len(cr.OwnerReferences) != 1 || cr.OwnerReferences[0].UID != owner.UID:
		t.Errorf("owner references %v", cr.OwnerReferences)
	}
	gone(t, c, want)
}

// TestSignRefused: Denied, InvalidRequest and Failed are errors that name
// the condition, its reason and message; the request is deleted.
func TestSignRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		decide func(*cmapi.CertificateRequest)
		want   string
	}{
		{"denied", func(cr *cmapi.CertificateRequest) {
			set(cr, cmapi.CertificateRequestConditionDenied, cmmeta.ConditionTrue, "policy.cert-manager.io", "no policy allows isCA")
		}, "is Denied=True: policy.cert-manager.io: no policy allows isCA"},
		{"invalid", func(cr *cmapi.CertificateRequest) {
			set(cr, cmapi.CertificateRequestConditionInvalidRequest, cmmeta.ConditionTrue, "BadConfig", "bad CSR")
		}, "is InvalidRequest=True: BadConfig: bad CSR"},
		{"failed", func(cr *cmapi.CertificateRequest) {
			set(cr, cmapi.CertificateRequestConditionApproved, cmmeta.ConditionTrue, "cert-manager.io", "approved")
			set(cr, cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonFailed, "Vault said no")
		}, "is Ready=False: Failed: Vault said no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient()
			issuerLoop(t, c, issuertest.Anchor(t), tc.decide)
			req, csr, _ := request(t)
			_, err := newAuthority(t, c, nil).Sign(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			gone(t, c, certmanager.Name("meshid-ca-0", csr.RawSubjectPublicKeyInfo))
		})
	}
}

// TestSignNotApproved: with no approver, Sign gives up at its timeout,
// says the request waits for approval, and deletes it.
func TestSignNotApproved(t *testing.T) {
	c := newClient()
	issuerLoop(t, c, issuertest.Anchor(t), func(*cmapi.CertificateRequest) {})
	req, csr, _ := request(t)
	a := newAuthority(t, c, func(cfg *certmanager.Config) { cfg.Timeout = 200 * time.Millisecond })
	_, err := a.Sign(context.Background(), req)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "is not Approved (is an approver running") {
		t.Fatalf("error %v, want a deadline saying it waits for approval", err)
	}
	gone(t, c, certmanager.Name("meshid-ca-0", csr.RawSubjectPublicKeyInfo))
}

// TestSignRetry: a request already made for the same key (a retry after a
// lost answer) is adopted, not made twice; one of the same name for
// another key is an error.
func TestSignRetry(t *testing.T) {
	root := issuertest.Anchor(t)
	c := newClient()
	req, csr, key := request(t)
	name := certmanager.Name("meshid-ca-0", csr.RawSubjectPublicKeyInfo)
	// The first try's request, already issued.
	cr := &cmapi.CertificateRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cert-manager.io/v1", Kind: "CertificateRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       cmapi.CertificateRequestSpec{Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}), IsCA: true, Duration: &metav1.Duration{Duration: time.Hour * 48}},
	}
	issue(cr)
	sign(t, cr, root)
	obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(cr)
	if _, err := c.Resource(certmanager.Resource).Namespace(ns).Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := newAuthority(t, c, nil)
	// The retry signs the same key again (a new CSR: ECDSA signatures differ).
	again, err := upstream.NewRequest(key, req.Subject, req.TTL)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := a.Sign(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	if err := upstream.Check(ans, key.Public(), time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, act := range c.Actions() {
		if act.GetVerb() == "create" {
			creates++
		}
	}
	if creates != 2 { // the test's and the retry's refused one
		t.Errorf("%d creates, want the test's and one refused by AlreadyExists", creates)
	}
	gone(t, c, name)

	// Another key under that name (made by hand, say).
	other, _, _ := request(t)
	cr.Spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: other.CSR})
	obj, _ = runtime.DefaultUnstructuredConverter.ToUnstructured(cr)
	if _, err := c.Resource(certmanager.Resource).Namespace(ns).Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sign(context.Background(), again); err == nil || !strings.Contains(err.Error(), "exists for another key") {
		t.Fatalf("error %v, want one saying the name is taken by another key", err)
	}
	if _, err := c.Resource(certmanager.Resource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Errorf("the other key's request is gone (%v): Sign must delete only its own", err)
	}
}

// TestSignRoots: with RootPEM, the roots are those and status.ca joins the
// chain.
func TestSignRoots(t *testing.T) {
	root := issuertest.Anchor(t)
	mid := issuertest.Intermediate(t, root)
	c := newClient()
	issuerLoop(t, c, mid, issue)
	a := newAuthority(t, c, func(cfg *certmanager.Config) {
		cfg.RootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Cert.Raw})
	})
	req, _, key := request(t)
	ans, err := a.Sign(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Roots) != 1 || !ans.Roots[0].Equal(root.Cert) || len(ans.Chain) != 1 || !ans.Chain[0].Equal(mid.Cert) {
		t.Fatalf("roots %d, chain %d: want the configured root and status.ca in the chain", len(ans.Roots), len(ans.Chain))
	}
	if err := upstream.Check(ans, key.Public(), time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
}

// TestNew: what a Config must say.
func TestNew(t *testing.T) {
	c := newClient()
	for _, tc := range []struct {
		mod  func(*certmanager.Config)
		want string
	}{
		{func(cfg *certmanager.Config) { cfg.IssuerName = "" }, "name the cert-manager Issuer"},
		{func(cfg *certmanager.Config) { cfg.Namespace = "" }, "namespace is required"},
		{func(cfg *certmanager.Config) { cfg.IssuerKind = "Vault" }, `issuer kind "Vault" must be Issuer or ClusterIssuer`},
		{func(cfg *certmanager.Config) { cfg.Replica = "Meshid_CA" }, `replica name "Meshid_CA"`},
		{func(cfg *certmanager.Config) { cfg.RootPEM = []byte("junk") }, "roots must be PEM certificates"},
	} {
		cfg := certmanager.Config{Client: c, Namespace: ns, IssuerName: "corp-ca"}
		tc.mod(&cfg)
		if _, err := certmanager.New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one saying %q", err, tc.want)
		}
	}
	a, err := certmanager.New(certmanager.Config{Client: c, Namespace: "mesh", IssuerName: "vault", IssuerKind: "ClusterIssuer", IssuerGroup: "vault.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Describe(), "cert-manager ClusterIssuer vault (vault.example.com), requests in mesh"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}

// TestSignDeleted: a request deleted while Sign waits (by hand, or with
// its owner) is an error at once, not a wait until the timeout.
func TestSignDeleted(t *testing.T) {
	c := newClient()
	res := c.Resource(certmanager.Resource).Namespace(ns)
	w, err := res.Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type == watch.Added {
				_ = res.Delete(context.Background(), ev.Object.(*unstructured.Unstructured).GetName(), metav1.DeleteOptions{})
				return
			}
		}
	}()
	req, _, _ := request(t)
	start := time.Now()
	_, err = newAuthority(t, c, nil).Sign(context.Background(), req)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "deleted while meshid-ca waited") {
		t.Fatalf("error %v, want one saying the request went", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Sign took %s to see the deletion", d)
	}
}
