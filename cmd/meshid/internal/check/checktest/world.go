// Package checktest is the cluster `meshid check`'s tests read: a World of
// fake clients (a healthy install with two CA replicas reporting, until a
// case changes it) and Cases, every row check can print. check's tests
// assert each case's rows; the meshid command's tests parse every hint the
// cases produce with the CLI's own cobra root. It is test material: only
// tests import it.
package checktest

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	clocktesting "k8s.io/utils/clock/testing"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

const (
	NS   = "meshid"
	Day  = 24 * time.Hour
	Year = 365 * Day
	// User is who the fake API server says check is.
	User = "jane@example.com"
)

var (
	TD  = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	Web = spiffeid.RequireFromPath(TD, "/ns/shop/sa/web")

	// The rows' names in the World.
	BundleRow       = "bundle meshid/meshid-trust-bundle"
	BundleUpdateRow = "bundle update meshid/meshid-trust-bundle"
	IssuerRow       = "issuer meshid/meshid-issuer"
	IssuerUpdateRow = "issuer update meshid/meshid-issuer"
	CARow           = "ca replicas meshid/meshid-ca"
	ReportsRow      = "ca reports meshid/meshid-fleet-*"
)

// World is a cluster as check reads it, healthy until a case changes it.
type World struct {
	Now            time.Time
	Anchor, Issuer *issuer.KeyPair
	Bundle         *corev1.ConfigMap // nil: absent
	IssuerSecret   *corev1.Secret    // nil: absent
	Deployment     *appsv1.Deployment
	NoNamespace    bool             // the namespace does not exist
	Objects        []runtime.Object // more objects
	Dynamic        []runtime.Object // cert-manager's objects
	// React adds reactors ahead of the World's own.
	React   func(*fake.Clientset)
	Proxies []string
	Opts    func(*check.Options)

	// Replicas publish fleet reports; nil: none does.
	Replicas []string
	// InForce is the issuer they sign with (nil: Issuer) and InForceAnchors
	// the bundle they hold (nil: Anchor alone).
	InForce        *issuer.KeyPair
	InForceAnchors []*x509.Certificate
	// Updates are every replica's pending updates; Fleet the proxies the
	// first replica reports; Report changes each report last.
	Updates []fleet.Update
	Fleet   []fleet.Proxy
	Report  func(*fleet.Report)
	// Denied are the reads RBAC denies, as health.Access spells them
	// ("get secrets meshid-issuer").
	Denied map[string]bool
	// As is who the API server says check is; empty means User.
	As string
}

// New returns a healthy World at now: one anchor, a 48 h issuer an hour
// old, the CA Deployment with 2 of 2 ready, both replicas reporting.
func New(t testing.TB, now time.Time) *World {
	w := &World{Now: now, Replicas: []string{"meshid-ca-a", "meshid-ca-b"}}
	w.Anchor = pkitest.CA(t, nil, "anchor", now.Add(-time.Hour), Year)
	w.Issuer = pkitest.CA(t, w.Anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	w.Bundle = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: NS, Name: manifest.BundleConfigMap}, Data: map[string]string{bundle.Key: string(w.Anchor.CertPEM())}}
	w.IssuerSecret = IssuerSecret(t, w.Issuer)
	w.Deployment = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: NS, Name: manifest.CAName}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}, Status: appsv1.DeploymentStatus{ReadyReplicas: 2}}
	return w
}

// IssuerSecret is the issuer Secret holding kp.
func IssuerSecret(t testing.TB, kp *issuer.KeyPair) *corev1.Secret {
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: NS, Name: manifest.IssuerSecret}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": kp.CertPEM(), "tls.key": key}}
}

// Secret is a Secret of the namespace holding crt as tls.crt.
func Secret(name string, crt []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: NS, Name: name}, Data: map[string][]byte{"tls.crt": crt}}
}

// Injector is the injector configuration with caBundle.
func Injector(caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: manifest.InjectorConfig(NS)},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: caBundle}}}}
}

// TrustReport is what a replica holding anchors and signing with iss
// reports of them at now, as meshid-ca makes it.
func TrustReport(iss *issuer.KeyPair, anchors []*x509.Certificate, now time.Time) fleet.Report {
	b, err := bundle.New(anchors...)
	if err != nil {
		panic(err)
	}
	r := fleet.Report{IssuerSHA256: iss.Fingerprint(), BundleSHA256: b.SHA256(), AnchorsTotal: len(anchors),
		Issuer: &fleet.Issuer{Subject: iss.Cert.Subject.String(), NotBefore: iss.Cert.NotBefore, NotAfter: iss.NotAfter()}}
	for _, a := range anchors {
		r.Anchors = append(r.Anchors, fleet.Anchor{SHA256: bundle.Fingerprint(a), NotAfter: a.NotAfter})
	}
	if expiry, err := iss.ChainExpiry(b, now); err == nil {
		r.Issuer.ChainNotAfter = expiry
	}
	top := iss.Certificates()[len(iss.Certificates())-1]
	for _, a := range anchors {
		if bytes.Equal(top.RawIssuer, a.RawSubject) && top.CheckSignatureFrom(a) == nil {
			r.Issuer.AnchorSHA256 = bundle.Fingerprint(a)
		}
	}
	return r
}

// reports are the replicas' fleet ConfigMaps.
func (w *World) reports() []runtime.Object {
	iss, anchors := w.InForce, w.InForceAnchors
	if iss == nil {
		iss = w.Issuer
	}
	if anchors == nil {
		anchors = []*x509.Certificate{w.Anchor.Cert}
	}
	var out []runtime.Object
	for i, name := range w.Replicas {
		r := TrustReport(iss, anchors, w.Now)
		r.Replica, r.Updated, r.Updates = name, w.Now.Add(-2*time.Second), w.Updates
		if i == 0 {
			r.Proxies = w.Fleet
		}
		if w.Report != nil {
			w.Report(&r)
		}
		data, err := json.Marshal(r)
		if err != nil {
			panic(err)
		}
		out = append(out, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: NS, Name: fleet.ConfigMapPrefix + name, Labels: map[string]string{fleet.Label: "true"}},
			Data:       map[string]string{fleet.ConfigMapKey: string(data)},
		})
	}
	return out
}

// ListKinds are the lists the fake dynamic client serves: cert-manager's,
// AuthorizationPolicies and FederatedTrustDomains.
var ListKinds = map[schema.GroupVersionResource]string{
	{Group: "meshid.dev", Version: "v1alpha1", Resource: "federatedtrustdomains"}: "FederatedTrustDomainList",
	{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}:           "CertificateList",
	{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}:                "IssuerList",
	{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}:         "ClusterIssuerList",
	v1alpha1.Resource: "AuthorizationPolicyList", // the dashboard's policy page
}

// Connect returns the World as a kube.Connect, and its clientset.
func (w *World) Connect() (kube.Connect, *fake.Clientset) {
	objs := append([]runtime.Object(nil), w.Objects...)
	if !w.NoNamespace {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: NS}})
	}
	if w.Bundle != nil {
		objs = append(objs, w.Bundle)
	}
	if w.IssuerSecret != nil {
		objs = append(objs, w.IssuerSecret)
	}
	if w.Deployment != nil {
		objs = append(objs, w.Deployment)
	}
	objs = append(objs, w.reports()...)
	client := fake.NewClientset(objs...)
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.34.4"}
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		review := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		attrs := review.Spec.ResourceAttributes
		res := attrs.Resource
		if attrs.Group != "" {
			res += "." + attrs.Group
		}
		what := strings.TrimSpace(attrs.Verb + " " + res + " " + attrs.Name)
		review.Status.Allowed = !w.Denied[what]
		if !review.Status.Allowed {
			review.Status.Reason = "no RBAC rule allows it"
		}
		return true, review, nil
	})
	client.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		who := w.As
		if who == "" {
			who = User
		}
		return true, &authenticationv1.SelfSubjectReview{Status: authenticationv1.SelfSubjectReviewStatus{UserInfo: authenticationv1.UserInfo{Username: who}}}, nil
	})
	if w.React != nil {
		w.React(client)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), ListKinds, w.Dynamic...)
	return func(kube.Target, string) (*kube.Clients, error) {
		return &kube.Clients{Kube: client, Dynamic: dyn}, nil
	}, client
}

// Options are check's options for the World, as the command's defaults.
func (w *World) Options() *check.Options {
	connect, _ := w.Connect()
	o := &check.Options{
		Namespace: NS, Bundle: manifest.BundleConfigMap, Issuer: manifest.IssuerSecret, Deployment: manifest.CAName,
		TrustDomain: identity.DefaultTrustDomain, Proxies: w.Proxies, WarnWithin: 60 * Day, Interval: 30 * time.Second, Output: "table",
		Connect: connect, Clock: clocktesting.NewFakeClock(w.Now),
	}
	if w.Opts != nil {
		w.Opts(o)
	}
	return o
}

// BundleSHA is the SHA-256 of the World's one-anchor bundle.
func (w *World) BundleSHA(t testing.TB) string {
	b, err := bundle.New(w.Anchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return b.SHA256()
}

// Proxy serves a proxy's /identity with body, until the test ends, and
// returns its address.
func Proxy(t testing.TB, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/identity" {
			http.NotFound(rw, r)
			return
		}
		fmt.Fprint(rw, body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// IdentityDoc is a proxy's /identity.
func IdentityDoc(t testing.TB, chain []byte, bundleSHA string) string {
	b, err := json.Marshal(map[string]string{"chain_pem": string(chain), "bundle_sha256": bundleSHA})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TransparentDoc is a transparent proxy's /identity: its redirect present
// and matching or not (problem says why), its destinations fresh or not.
func TransparentDoc(t testing.TB, chain []byte, bundleSHA string, redirect bool, problem string, fresh bool, updated time.Time) string {
	b, err := json.Marshal(map[string]any{
		"chain_pem": string(chain), "bundle_sha256": bundleSHA,
		"redirect":  map[string]any{"mode": "transparent", "present": redirect, "matching": redirect, "problem": problem},
		"discovery": map[string]any{"fresh": fresh, "connected": fresh, "last_update": updated},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Row matches a table row: CHECK (and an anchor's fingerprint), STATUS,
// then the detail.
func Row(check string, status health.Status, detail string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(check) + `( \([0-9a-f]{12}\))?\s+` + strings.ToUpper(string(status)) + `\s+.*` + regexp.QuoteMeta(detail))
}

// Hint matches the hint of the row named check (a prefix), with text that
// holds contains.
func Hint(check, contains string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^hint: ` + regexp.QuoteMeta(check) + `.*: .*` + regexp.QuoteMeta(contains))
}

// Reported is a healthy proxy of id the first replica reports: the bundle
// in force, a leaf from the issuer valid for 20 h more, seen 3 s ago.
func (w *World) Reported(t testing.TB, id spiffeid.ID, instance string) fleet.Proxy {
	return fleet.Proxy{
		ID: id.String(), Instance: instance, BundleSHA256: w.BundleSHA(t), LeafSerial: "01",
		LeafIssuerSHA256: w.Issuer.Fingerprint(), LeafAnchorSHA256: bundle.Fingerprint(w.Anchor.Cert),
		LeafNotAfter: w.Now.Add(20 * time.Hour), LastSeen: w.Now.Add(-3 * time.Second), Heartbeat: fleet.Duration(10 * time.Second),
	}
}
