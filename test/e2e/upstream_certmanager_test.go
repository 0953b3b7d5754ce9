package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/issuer/upstream"
	"github.com/meshid/meshid/issuer/upstream/certmanager"
)

// TestUpstreamCertManager: meshid-ca's cert-manager upstream, with the
// RBAC docs/ca.md gives it and nothing more, gets its intermediate from a
// CA Issuer through cert-manager's real controller, approval included
// (cert-manager's own approver controller approves it). The intermediate
// passes the upstream checks and the trust store's check against the
// anchor, a leaf it signs verifies with go-spiffe, and the request is gone
// afterwards. Then a request is Denied (an admission policy stands for a
// policy approver: it keeps cert-manager's approver from approving, and the
// test denies the request as approver-policy would): the Renewer says why
// and keeps the intermediate in force. A request nobody approves ends at
// the timeout with an error that says so, and is deleted too.
func TestUpstreamCertManager(t *testing.T) {
	t.Parallel()
	e := need(t)
	ctx := context.Background()
	ns := namespace(t, "meshid-cm-upstream")
	startCertManager(t, ns)

	// The organisation's PKI: a CA Issuer whose Secret holds the anchor.
	anchor := issuertest.Anchor(t)
	keyPEM, err := anchor.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "corp-ca"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: anchor.CertPEM(), corev1.TLSPrivateKeyKey: keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t, `apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: corp-ca, namespace: `+ns+`}
spec: {ca: {secretName: corp-ca}}
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", "issuer/corp-ca"); err != nil {
		t.Fatalf("the CA Issuer is not Ready: %v\n%s", err, out)
	}

	a, err := certmanager.New(certmanager.Config{
		Client: leastPrivilege(t, ns, "meshid-ca"), Namespace: ns, IssuerName: "corp-ca", Replica: "meshid-ca-0", Timeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := bundle.Parse(anchor.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		inUse []*issuer.KeyPair
	)
	r, err := upstream.NewRenewer(upstream.Config{
		Authority: a, TTL: 6 * time.Hour,
		// What the CA's trust store does with a new issuer: verify it
		// against the bundle before it signs anything.
		Use: func(kp *issuer.KeyPair, _ []*x509.Certificate) error {
			if err := issuer.Verify(kp, anchors, time.Now()); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			inUse = append(inUse, kp)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	r.Renew(ctx)
	st := r.Status()
	if st.Failures != 0 || len(inUse) != 1 {
		t.Fatalf("no intermediate from %s: %s", st.Upstream, st.LastError)
	}
	t.Logf("intermediate from %s in %s", st.Upstream, time.Since(start).Round(time.Millisecond))
	kp := inUse[0]
	if life := kp.NotAfter().Sub(kp.Cert.NotBefore); life < 5*time.Hour || life > 7*time.Hour {
		t.Errorf("the intermediate lives %s, want the 6h asked for", life)
	}
	if !kp.Cert.IsCA || kp.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("the intermediate is not a CA that signs certificates")
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(trustDomain, "/ns/"+ns+"/sa/web")
	leaf, err := kp.Sign(ctx, issuer.LeafParams{ID: id, PublicKey: leafKey.Public(), Now: time.Now(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{mustParse(t, leaf.DER)}
	chain = append(chain, leaf.Intermediates...)
	if got, _, err := x509svid.Verify(chain, anchors.X509Bundle(trustDomain)); err != nil || got != id {
		t.Fatalf("the leaf does not verify against the anchor with go-spiffe: %v (%s)", err, got)
	}
	requestsLeft(t, a, ns, 0)

	// A policy approver says no.
	denyApproval(t, ns)
	done := make(chan struct{})
	go func() { defer close(done); r.Renew(ctx) }()
	var pending *unstructured.Unstructured
	eventually(t, 30*time.Second, func() error {
		l, err := e.dynamic(t).Resource(certmanager.Resource).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: certmanager.LabelReplica + "=meshid-ca-0"})
		if err != nil || len(l.Items) != 1 {
			return fmt.Errorf("the renewal's request is not there: %v", err)
		}
		pending = &l.Items[0]
		return nil
	})
	var cr cmapi.CertificateRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(pending.Object, &cr); err != nil {
		t.Fatal(err)
	}
	for _, c := range cr.Status.Conditions {
		if c.Type == cmapi.CertificateRequestConditionApproved {
			t.Fatalf("the request was approved despite the policy: %+v", c)
		}
	}
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
		Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue,
		Reason: "policy.meshid.test", Message: "no policy allows isCA requests from meshid-ca-0",
	})
	obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&cr)
	if _, err := e.dynamic(t).Resource(certmanager.Resource).Namespace(ns).UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the renewal did not end after the request was denied")
	}
	st = r.Status()
	if want := "is Denied=True: policy.meshid.test: no policy allows isCA requests from meshid-ca-0"; st.Failures != 1 || !strings.Contains(st.LastError, want) {
		t.Fatalf("after a denial: %d failures, last error %q; want one saying %q", st.Failures, st.LastError, want)
	}
	if len(inUse) != 1 || !st.NotAfter.Equal(kp.NotAfter()) || st.TimeToOutage(time.Now()) < 5*time.Hour {
		t.Fatalf("the denial changed the issuer in force (%d in use, not after %s)", len(inUse), st.NotAfter)
	}
	requestsLeft(t, a, ns, 0)

	// Nobody approves in time: Sign says so at its timeout and leaves no
	// request behind.
	slow, err := certmanager.New(certmanager.Config{
		Client: leastPrivilege(t, ns, "meshid-ca-1"), Namespace: ns, IssuerName: "corp-ca", Replica: "meshid-ca-1", Timeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := upstream.MemoryKeys{}.NewKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, err := upstream.NewRequest(key, pkix.Name{CommonName: "meshid issuer"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Sign(ctx, req); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "is not Approved (is an approver running") {
		t.Fatalf("an unapproved request: %v; want a deadline that names the missing approval", err)
	}
	requestsLeft(t, slow, ns, 0)
}

// leastPrivilege is a client as the service account sa with the Role
// docs/ca.md gives the cert-manager upstream, and nothing else.
func leastPrivilege(t *testing.T, ns, sa string) dynamic.Interface {
	t.Helper()
	e := need(t)
	ctx := context.Background()
	serviceAccount(t, ns, sa)
	if _, err := e.client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: sa + "-upstream"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"cert-manager.io"}, Resources: []string{"certificaterequests"},
			Verbs: []string{"create", "get", "watch", "delete"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa + "-upstream"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa + "-upstream"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", saKubeconfig(t, ns, sa))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// denyApproval installs an admission policy that refuses any approval of
// a CertificateRequest in ns (cert-manager's approver then retries in
// vain), and waits until it is in force.
func denyApproval(t *testing.T, ns string) {
	t.Helper()
	name := "meshid-e2e-no-approval-" + ns
	if out, err := kubectl(t, `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: `+name+`}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [cert-manager.io], apiVersions: ["*"], resources: [certificaterequests/status], operations: [UPDATE]}
  validations:
  - expression: "!has(object.status) || !has(object.status.conditions) || !object.status.conditions.exists(c, c.type == 'Approved' && c.status == 'True')"
    message: "meshid e2e: approvals are the policy approver's (the test's)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: `+name+`}
spec:
  policyName: `+name+`
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: `+ns+`}}
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() {
		kubectl(t, "", "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found")
	})
	// In force once an approval of a probe request is refused.
	ctx := context.Background()
	res := need(t).dynamic(t).Resource(certmanager.Resource).Namespace(ns)
	probe := &cmapi.CertificateRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cert-manager.io/v1", Kind: "CertificateRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: "policy-probe", Namespace: ns},
		// Names no issuer: cert-manager never signs it.
		Spec: cmapi.CertificateRequestSpec{Request: probeCSR(t), IssuerRef: cmmeta.IssuerReference{Name: "none", Kind: "Issuer"}},
	}
	obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(probe)
	if _, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer res.Delete(ctx, "policy-probe", metav1.DeleteOptions{})
	eventually(t, 30*time.Second, func() error {
		u, err := res.Get(ctx, "policy-probe", metav1.GetOptions{})
		if err != nil {
			return err
		}
		var cr cmapi.CertificateRequest
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr); err != nil {
			return err
		}
		cr.Status.Conditions = []cmapi.CertificateRequestCondition{{Type: cmapi.CertificateRequestConditionApproved, Status: cmmeta.ConditionTrue, Reason: "probe", Message: "probe"}}
		obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&cr)
		_, err = res.UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
		if err == nil || !strings.Contains(err.Error(), "approvals are the policy approver's") {
			return fmt.Errorf("the admission policy is not in force yet (approval: %v)", err)
		}
		return nil
	})
}

func probeCSR(t *testing.T) []byte {
	t.Helper()
	key, err := upstream.MemoryKeys{}.NewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, err := upstream.NewRequest(key, pkix.Name{CommonName: "policy probe"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR})
}

// requestsLeft fails unless ns holds want of the Authority's requests.
func requestsLeft(t *testing.T, a *certmanager.Authority, ns string, want int) {
	t.Helper()
	l, err := need(t).dynamic(t).Resource(certmanager.Resource).Namespace(ns).List(context.Background(), metav1.ListOptions{LabelSelector: certmanager.LabelReplica})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != want {
		t.Errorf("%d CertificateRequests of %s left in %s, want %d: finished requests must be deleted", len(l.Items), a.Describe(), ns, want)
	}
}

// dynamic is an admin dynamic client.
func (e *environment) dynamic(t *testing.T) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(e.cluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
