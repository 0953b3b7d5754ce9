package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

const (
	ns   = "meshid"
	day  = 24 * time.Hour
	year = 365 * day
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// world is a cluster as check reads it, healthy until a case changes it.
type world struct {
	now            time.Time
	anchor, issuer *issuer.KeyPair
	bundle         *corev1.ConfigMap // nil: absent
	issuerSecret   *corev1.Secret    // nil: absent
	deployment     *appsv1.Deployment
	objects        []runtime.Object // more objects
	dynamic        []runtime.Object // cert-manager's objects
	react          func(*fake.Clientset)
	proxies        []string
	opts           func(*check.Options)
}

func newWorld(t *testing.T, now time.Time) *world {
	w := &world{now: now}
	w.anchor = pkitest.CA(t, nil, "anchor", now.Add(-time.Hour), year)
	w.issuer = pkitest.CA(t, w.anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	w.bundle = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: manifest.BundleConfigMap}, Data: map[string]string{bundle.Key: string(w.anchor.CertPEM())}}
	w.issuerSecret = issuerSecret(t, w.issuer)
	w.deployment = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: manifest.CAName}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}, Status: appsv1.DeploymentStatus{ReadyReplicas: 2}}
	return w
}

func issuerSecret(t *testing.T, kp *issuer.KeyPair) *corev1.Secret {
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: manifest.IssuerSecret}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": kp.CertPEM(), "tls.key": key}}
}

func secret(name string, crt []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"tls.crt": crt}}
}

func injector(caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: manifest.InjectorConfig(ns)},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: caBundle}}}}
}

// connect returns the world as a kube.Connect.
func (w *world) connect() (kube.Connect, *fake.Clientset) {
	objs := append([]runtime.Object(nil), w.objects...)
	if w.bundle != nil {
		objs = append(objs, w.bundle)
	}
	if w.issuerSecret != nil {
		objs = append(objs, w.issuerSecret)
	}
	if w.deployment != nil {
		objs = append(objs, w.deployment)
	}
	client := fake.NewClientset(objs...)
	if w.react != nil {
		w.react(client)
	}
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), w.dynamic...)
	return func(string, string) (*kube.Clients, error) {
		return &kube.Clients{Kube: client, Dynamic: dyn}, nil
	}, client
}

func (w *world) options() *check.Options {
	connect, _ := w.connect()
	o := &check.Options{
		Namespace: ns, Bundle: manifest.BundleConfigMap, Issuer: manifest.IssuerSecret, Deployment: manifest.CAName,
		TrustDomain: identity.DefaultTrustDomain, Proxies: w.proxies, WarnWithin: 60 * day, Interval: 30 * time.Second, Output: "table",
		Connect: connect, Clock: clocktesting.NewFakeClock(w.now),
	}
	if w.opts != nil {
		w.opts(o)
	}
	return o
}

// proxy serves a proxy's /identity with body.
func proxy(t *testing.T, body string) string {
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

func identityDoc(t *testing.T, chain []byte, bundleSHA string) string {
	b, err := json.Marshal(map[string]string{"chain_pem": string(chain), "bundle_sha256": bundleSHA})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// row matches a table row: CHECK, STATUS, then the detail.
func row(check string, status health.Status, detail string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(check) + `\s+` + strings.ToUpper(string(status)) + `\s+.*` + regexp.QuoteMeta(detail))
}

func hint(check string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^hint: ` + regexp.QuoteMeta(check) + `.*: \S`)
}

var (
	bundleRow = "bundle meshid/meshid-trust-bundle"
	issuerRow = "issuer meshid/meshid-issuer"
	caRow     = "ca replicas meshid/meshid-ca"
)

// TestRows drives check through every row it can print, one cluster (or
// proxy) state each, and checks the printed row, its hint, and the exit.
func TestRows(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	web := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	tests := []struct {
		name    string
		mod     func(t *testing.T, w *world)
		want    []*regexp.Regexp
		hints   []string // rows whose hint is printed
		absent  []string // rows not printed at all
		problem bool     // exits 1
	}{
		{
			name: "healthy",
			want: []*regexp.Regexp{
				row(bundleRow, health.OK, "1 anchor(s), sha256 "),
				row("anchor 0 anchor", health.OK, "CA, valid for 364d more"),
				row(issuerRow, health.OK, "CA, key matches, chains to the bundle, valid for 47h00m more"),
				row(caRow, health.OK, "2 of 2 ready"),
			},
			absent: []string{"webhook CA", "webhook certificate", "proxy ", "hint:"},
		},
		{
			name:    "bundle ConfigMap missing",
			mod:     func(t *testing.T, w *world) { w.bundle = nil },
			want:    []*regexp.Regexp{row(bundleRow, health.Fail, "ConfigMap not found"), row(issuerRow, health.Fail, "cannot be checked without a trust bundle")},
			hints:   []string{bundleRow, issuerRow},
			problem: true,
		},
		{
			name: "bundle ConfigMap unreadable",
			mod: func(t *testing.T, w *world) {
				w.react = func(c *fake.Clientset) {
					c.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
						return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, manifest.BundleConfigMap, errors.New("RBAC says no"))
					})
				}
			},
			want:    []*regexp.Regexp{row(bundleRow, health.Fail, "cannot read the ConfigMap: ")},
			hints:   []string{bundleRow},
			problem: true,
		},
		{
			name: "bundle ConfigMap without its key",
			mod: func(t *testing.T, w *world) {
				w.bundle.Data = map[string]string{"bundle.pem": string(w.anchor.CertPEM())}
			},
			want:    []*regexp.Regexp{row(bundleRow, health.Fail, "the ConfigMap has no key ca-bundle.crt")},
			hints:   []string{bundleRow},
			problem: true,
		},
		{
			name:    "bundle does not parse",
			mod:     func(t *testing.T, w *world) { w.bundle.Data[bundle.Key] = "not PEM" },
			want:    []*regexp.Regexp{row(bundleRow, health.Fail, "")},
			hints:   []string{bundleRow},
			absent:  []string{"anchor 0"},
			problem: true,
		},
		{
			name: "anchor expired",
			mod: func(t *testing.T, w *world) {
				old := pkitest.CA(t, nil, "old", w.now.Add(-2*year), year)
				w.bundle.Data[bundle.Key] += string(old.CertPEM())
			},
			want:    []*regexp.Regexp{row(bundleRow, health.OK, "2 anchor(s)"), row("anchor 1 old", health.Fail, "expired at 2029-")},
			hints:   []string{"anchor 1 old"},
			problem: true,
		},
		{
			name: "anchor not valid yet",
			mod: func(t *testing.T, w *world) {
				next := pkitest.CA(t, nil, "next", w.now.Add(day), year)
				w.bundle.Data[bundle.Key] += string(next.CertPEM())
			},
			want:    []*regexp.Regexp{row("anchor 1 next", health.Fail, "not valid before 2030-06-02T12:00:00Z")},
			hints:   []string{"anchor 1 next"},
			problem: true,
		},
		{
			name:  "anchor within --warn-within",
			mod:   func(t *testing.T, w *world) { w.opts = func(o *check.Options) { o.WarnWithin = 400 * day } },
			want:  []*regexp.Regexp{row("anchor 0 anchor", health.Warn, "expires in 364d, within the 400d warning window")},
			hints: []string{"anchor 0 anchor"},
		},
		{
			name: "anchor within --warn-within, --fail-on-warning",
			mod: func(t *testing.T, w *world) {
				w.opts = func(o *check.Options) { o.WarnWithin, o.FailOnWarning = 400*day, true }
			},
			want:    []*regexp.Regexp{row("anchor 0 anchor", health.Warn, "warning window")},
			hints:   []string{"anchor 0 anchor"},
			problem: true,
		},
		{
			name:    "issuer Secret missing",
			mod:     func(t *testing.T, w *world) { w.issuerSecret = nil },
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "Secret not found")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer Secret unreadable",
			mod: func(t *testing.T, w *world) {
				w.react = func(c *fake.Clientset) {
					c.PrependReactor("get", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
						if a.(k8stesting.GetAction).GetName() != manifest.IssuerSecret {
							return false, nil, nil
						}
						return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, manifest.IssuerSecret, errors.New("RBAC says no"))
					})
				}
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "cannot read the Secret: ")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer key does not match",
			mod: func(t *testing.T, w *world) {
				other := pkitest.CA(t, w.anchor, "other", w.now.Add(-time.Hour), 48*time.Hour)
				w.issuerSecret.Data["tls.key"] = issuerSecret(t, other).Data["tls.key"]
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer from another anchor",
			mod: func(t *testing.T, w *world) {
				stranger := pkitest.CA(t, nil, "stranger", w.now.Add(-time.Hour), year)
				w.issuerSecret = issuerSecret(t, pkitest.CA(t, stranger, "issuer", w.now.Add(-time.Hour), 48*time.Hour))
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "does not chain to any anchor of the bundle")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer expired",
			mod: func(t *testing.T, w *world) {
				w.issuerSecret = issuerSecret(t, pkitest.CA(t, w.anchor, "issuer", w.now.Add(-50*time.Hour), 48*time.Hour))
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "expired")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer within a third of its lifetime",
			mod: func(t *testing.T, w *world) {
				w.issuerSecret = issuerSecret(t, pkitest.CA(t, w.anchor, "issuer", w.now.Add(-40*time.Hour), 48*time.Hour))
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "expires in 8h00m, within 16h00m")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name:    "issuer within --issuer-warn-within",
			mod:     func(t *testing.T, w *world) { w.opts = func(o *check.Options) { o.IssuerWarnWithin = 72 * time.Hour } },
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "expires in 47h00m, within 3d")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer within cert-manager's renewBefore",
			mod: func(t *testing.T, w *world) {
				w.issuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": "meshid-issuer-cert"}
				w.dynamic = []runtime.Object{&unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
					"metadata": map[string]any{"namespace": ns, "name": "meshid-issuer-cert"},
					"spec":     map[string]any{"renewBefore": "50h"},
				}}}
			},
			want:    []*regexp.Regexp{row(issuerRow, health.Fail, "expires in 47h00m, within 2d")},
			hints:   []string{issuerRow},
			problem: true,
		},
		{
			name: "issuer managed by a Certificate that cannot be read",
			mod: func(t *testing.T, w *world) {
				w.issuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": "gone"}
			},
			want: []*regexp.Regexp{row(issuerRow, health.OK, "valid for 47h00m more")},
		},
		{
			name: "webhook CA in sync",
			mod: func(t *testing.T, w *world) {
				ca := pkitest.CA(t, nil, "webhook CA", w.now.Add(-time.Hour), year)
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, ca.CertPEM()), injector(ca.CertPEM()))
			},
			want: []*regexp.Regexp{row("webhook CA", health.OK, "valid for 364d more, caBundle in sync")},
		},
		{
			name: "webhook CA without an injector configuration",
			mod: func(t *testing.T, w *world) {
				ca := pkitest.CA(t, nil, "webhook CA", w.now.Add(-time.Hour), year)
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			want: []*regexp.Regexp{row("webhook CA", health.OK, "valid for 364d more")},
		},
		{
			name: "webhook CA out of sync with the injector",
			mod: func(t *testing.T, w *world) {
				ca := pkitest.CA(t, nil, "webhook CA", w.now.Add(-time.Hour), year)
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, ca.CertPEM()), injector(w.anchor.CertPEM()))
			},
			want:    []*regexp.Regexp{row("webhook CA", health.Fail, "the injector's caBundle is not the webhook CA")},
			hints:   []string{"webhook CA"},
			problem: true,
		},
		{
			name: "webhook CA expired",
			mod: func(t *testing.T, w *world) {
				ca := pkitest.CA(t, nil, "webhook CA", w.now.Add(-2*year), year)
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			want:    []*regexp.Regexp{row("webhook CA", health.Fail, "expired: the API server refuses the webhooks' certificates")},
			hints:   []string{"webhook CA"},
			problem: true,
		},
		{
			name: "webhook CA within --warn-within",
			mod: func(t *testing.T, w *world) {
				ca := pkitest.CA(t, nil, "webhook CA", w.now.Add(-time.Hour), 30*day)
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			want:  []*regexp.Regexp{row("webhook CA", health.Warn, "expires in 29d")},
			hints: []string{"webhook CA"},
		},
		{
			name: "webhook CA does not parse",
			mod: func(t *testing.T, w *world) {
				w.objects = append(w.objects, secret(manifest.WebhookCASecret, []byte("junk")))
			},
			want:    []*regexp.Regexp{row("webhook CA", health.Fail, "")},
			hints:   []string{"webhook CA"},
			problem: true,
		},
		{
			name: "webhook certificate fresh",
			mod: func(t *testing.T, w *world) {
				chain, _ := pkitest.Leaf(t, w.issuer, web, w.now.Add(-time.Hour), 24*time.Hour)
				w.objects = append(w.objects, secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			want: []*regexp.Regexp{row("webhook certificate", health.OK, "valid for 23h00m more")},
		},
		{
			name: "webhook certificate past its renewal time",
			mod: func(t *testing.T, w *world) {
				chain, _ := pkitest.Leaf(t, w.issuer, web, w.now.Add(-20*time.Hour), 24*time.Hour)
				w.objects = append(w.objects, secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			want:  []*regexp.Regexp{row("webhook certificate", health.Warn, "expires in 4h00m, past its renewal time")},
			hints: []string{"webhook certificate"},
		},
		{
			name: "webhook certificate expired",
			mod: func(t *testing.T, w *world) {
				old := pkitest.CA(t, w.anchor, "old issuer", w.now.Add(-10*day), 20*day)
				chain, _ := pkitest.Leaf(t, old, web, w.now.Add(-25*time.Hour), 24*time.Hour)
				w.objects = append(w.objects, secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			want:    []*regexp.Regexp{row("webhook certificate", health.Fail, "expired: the API server cannot call the webhooks")},
			hints:   []string{"webhook certificate"},
			problem: true,
		},
		{
			name: "webhook certificate Secret without a certificate",
			mod: func(t *testing.T, w *world) {
				w.objects = append(w.objects, secret(manifest.WebhookTLSSecret, []byte("junk")))
			},
			want:    []*regexp.Regexp{row("webhook certificate", health.Fail, "Secret meshid-webhook-tls holds no certificate")},
			hints:   []string{"webhook certificate"},
			problem: true,
		},
		{
			name: "webhook certificate does not parse",
			mod: func(t *testing.T, w *world) {
				w.objects = append(w.objects, secret(manifest.WebhookTLSSecret, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))
			},
			want:    []*regexp.Regexp{row("webhook certificate", health.Fail, "x509: ")},
			hints:   []string{"webhook certificate"},
			problem: true,
		},
		{
			name:  "CA Deployment missing",
			mod:   func(t *testing.T, w *world) { w.deployment = nil },
			want:  []*regexp.Regexp{row(caRow, health.Warn, "Deployment not found")},
			hints: []string{caRow},
		},
		{
			name: "CA Deployment unreadable",
			mod: func(t *testing.T, w *world) {
				w.react = func(c *fake.Clientset) {
					c.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
						return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, manifest.CAName, errors.New("RBAC says no"))
					})
				}
			},
			want:  []*regexp.Regexp{row(caRow, health.Warn, "cannot read the Deployment: ")},
			hints: []string{caRow},
		},
		{
			name:    "CA Deployment with no ready replica",
			mod:     func(t *testing.T, w *world) { w.deployment.Status.ReadyReplicas = 0 },
			want:    []*regexp.Regexp{row(caRow, health.Fail, "0 of 2 ready")},
			hints:   []string{caRow},
			problem: true,
		},
		{
			name:  "CA Deployment partly ready",
			mod:   func(t *testing.T, w *world) { w.deployment.Status.ReadyReplicas = 1 },
			want:  []*regexp.Regexp{row(caRow, health.Warn, "1 of 2 ready")},
			hints: []string{caRow},
		},
		{
			name: "CA Deployment without replicas is one replica",
			mod:  func(t *testing.T, w *world) { w.deployment.Spec.Replicas, w.deployment.Status.ReadyReplicas = nil, 1 },
			want: []*regexp.Regexp{row(caRow, health.OK, "1 of 1 ready")},
		},
		{
			name:   "no --deployment",
			mod:    func(t *testing.T, w *world) { w.opts = func(o *check.Options) { o.Deployment = "" } },
			absent: []string{"ca replicas"},
		},
		{
			name: "proxy healthy",
			mod: func(t *testing.T, w *world) {
				chain, _ := pkitest.Leaf(t, w.issuer, web, w.now.Add(-time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.PEM(chain...), sha(t, w)))}
			},
			want: []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+OK\s+23h00m\s+spiffe://cluster.local/ns/shop/sa/web, valid for 23h00m more`)},
		},
		{
			name: "proxy unreachable",
			mod: func(t *testing.T, w *world) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				w.proxies = []string{l.Addr().String()}
				l.Close()
			},
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+cannot reach /identity: `)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name:    "proxy answers no JSON",
			mod:     func(t *testing.T, w *world) { w.proxies = []string{proxy(t, "<html>")} },
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+/identity did not answer JSON: `)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name: "proxy chain is not certificates",
			mod: func(t *testing.T, w *world) {
				_, key := pkitest.Leaf(t, w.issuer, web, w.now.Add(-time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.KeyPEM(t, key), sha(t, w)))}
			},
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+/identity chain: block 1 is "PRIVATE KEY"; inspect reads certificates only`)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name:    "proxy holds no certificate",
			mod:     func(t *testing.T, w *world) { w.proxies = []string{proxy(t, identityDoc(t, nil, ""))} },
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+holds no certificate`)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name: "proxy certificate expired",
			mod: func(t *testing.T, w *world) {
				old := pkitest.CA(t, w.anchor, "old issuer", w.now.Add(-10*day), 20*day)
				chain, _ := pkitest.Leaf(t, old, web, w.now.Add(-25*time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.PEM(chain...), sha(t, w)))}
			},
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+expired 1h00m ago\s+its certificate expired at 2030-06-01T11:00:00Z`)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name: "proxy certificate from another anchor",
			mod: func(t *testing.T, w *world) {
				stranger := pkitest.CA(t, pkitest.CA(t, nil, "stranger", w.now.Add(-time.Hour), year), "issuer", w.now.Add(-time.Hour), 48*time.Hour)
				chain, _ := pkitest.Leaf(t, stranger, web, w.now.Add(-time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.PEM(chain...), sha(t, w)))}
			},
			want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+23h00m\s+its certificate does not chain to the current bundle: `)},
			hints:   []string{"proxy 127.0.0.1"},
			problem: true,
		},
		{
			name: "proxy certificate past its renewal time",
			mod: func(t *testing.T, w *world) {
				chain, _ := pkitest.Leaf(t, w.issuer, web, w.now.Add(-20*time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.PEM(chain...), sha(t, w)))}
			},
			want:  []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+WARN\s+4h00m\s+its certificate expires in 4h00m, past its renewal time`)},
			hints: []string{"proxy 127.0.0.1"},
		},
		{
			name: "proxy holds another bundle",
			mod: func(t *testing.T, w *world) {
				chain, _ := pkitest.Leaf(t, w.issuer, web, w.now.Add(-time.Hour), 24*time.Hour)
				w.proxies = []string{proxy(t, identityDoc(t, pkitest.PEM(chain...), strings.Repeat("ab", 32)))}
			},
			want:  []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+WARN\s+23h00m\s+holds bundle abababababab, the cluster's is [0-9a-f]{12}`)},
			hints: []string{"proxy 127.0.0.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, now)
			if tt.mod != nil {
				tt.mod(t, w)
			}
			var out bytes.Buffer
			err := check.Run(context.Background(), w.options(), &out)
			if tt.problem != (err != nil) {
				t.Fatalf("Run = %v, want a problem: %v\n%s", err, tt.problem, out.String())
			}
			if err != nil && err != check.ErrProblems {
				t.Fatalf("Run = %v, want check.ErrProblems", err)
			}
			for _, re := range tt.want {
				if !re.MatchString(out.String()) {
					t.Errorf("no row matching %s in\n%s", re, out.String())
				}
			}
			for _, h := range tt.hints {
				if !hint(h).MatchString(out.String()) {
					t.Errorf("no hint for %q in\n%s", h, out.String())
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("%q printed:\n%s", a, out.String())
				}
			}
			wantStatus := "Status: OK"
			switch {
			case tt.problem && !strings.Contains(tt.name, "fail-on-warning"):
				wantStatus = "Status: FAIL"
			case len(tt.hints) > 0:
				wantStatus = "Status: WARN"
			}
			if !strings.HasSuffix(out.String(), wantStatus+"\n") {
				t.Errorf("output does not end with %q:\n%s", wantStatus, out.String())
			}
		})
	}
}

func sha(t *testing.T, w *world) string {
	b, err := bundle.Parse(w.anchor.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return b.SHA256()
}

// TestTable checks the whole table of a healthy cluster: the columns, the
// time to outage (the issuer, the earliest expiry) and the status.
func TestTable(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	w := newWorld(t, now)
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.options(), &out); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`CHECK                              STATUS  EXPIRES IN  DETAIL
bundle meshid/meshid-trust-bundle  OK      -           1 anchor(s), sha256 %.12s
anchor 0 anchor                    OK      364d        CA, valid for 364d more
issuer meshid/meshid-issuer        OK      47h00m      CA, key matches, chains to the bundle, valid for 47h00m more
ca replicas meshid/meshid-ca       OK      -           2 of 2 ready

Time to outage: 47h00m (issuer meshid/meshid-issuer, at 2030-06-03T11:00:00Z)
Status: OK
`, sha(t, w))
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestNoOutageWhenNothingReads: with neither bundle nor issuer there is no
// expiry to name, and no headline.
func TestNoOutageWhenNothingReads(t *testing.T) {
	w := newWorld(t, time.Now())
	w.bundle, w.issuerSecret = nil, nil
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.options(), &out); err != check.ErrProblems {
		t.Fatalf("Run = %v, want check.ErrProblems", err)
	}
	if strings.Contains(out.String(), "Time to outage") {
		t.Fatalf("a time to outage with nothing read:\n%s", out.String())
	}
	// It exits 1 and prints no error line of its own: the rows said it.
	var stderr bytes.Buffer
	if code := cli.Code(&stderr, check.ErrProblems); code != cli.ExitProblem || stderr.Len() != 0 {
		t.Fatalf("exit %d, printed %q", code, stderr.String())
	}
}

func TestJSON(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	w := newWorld(t, now)
	w.deployment.Status.ReadyReplicas = 1
	w.opts = func(o *check.Options) { o.Output = "json" }
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.options(), &out); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Checks []health.Row  `json:"checks"`
		Status health.Status `json:"status"`
		At     time.Time     `json:"time_to_outage_at"`
		Of     string        `json:"time_to_outage_of"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got.Status != health.Warn || len(got.Checks) != 4 || got.Checks[3].Status != health.Warn || got.Checks[3].Detail != "1 of 2 ready" {
		t.Fatalf("got %+v", got)
	}
	if !got.At.Equal(w.issuer.NotAfter()) || got.Of != issuerRow {
		t.Fatalf("time to outage %s of %q, want the issuer's %s", got.At, got.Of, w.issuer.NotAfter())
	}
}

// TestConnect: the clients are built once, from --kubeconfig, and a
// failure to build them is the command's error.
func TestConnect(t *testing.T) {
	w := newWorld(t, time.Now())
	o := w.options()
	real := o.Connect
	var calls []string
	o.Kubeconfig = "/path/kubeconfig"
	o.Connect = func(kubeconfig, agent string) (*kube.Clients, error) {
		calls = append(calls, kubeconfig+" "+agent)
		return real(kubeconfig, agent)
	}
	if err := check.Run(context.Background(), o, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != "/path/kubeconfig meshid-check" {
		t.Fatalf("Connect calls %q, want one for /path/kubeconfig as meshid-check", calls)
	}
	boom := errors.New("no kubeconfig")
	o.Connect = func(string, string) (*kube.Clients, error) { return nil, boom }
	var out bytes.Buffer
	if err := check.Run(context.Background(), o, &out); !errors.Is(err, boom) || out.Len() != 0 {
		t.Fatalf("Run = %v, printed %q; want the Connect error and nothing printed", err, out.String())
	}
}

// lockedBuffer is written by Run's goroutine and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestWatch: --watch prints every row once, then only the rows whose status
// changed, every --interval, and returns nil when the context ends.
func TestWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, time.Now())
		o := w.options()
		connect, client := w.connect()
		o.Connect, o.Clock, o.Watch = connect, clock.RealClock{}, true
		start := time.Now().UTC()
		ctx, cancel := context.WithCancel(context.Background())
		var out lockedBuffer
		done := make(chan error)
		go func() { done <- check.Run(ctx, o, &out) }()

		synctest.Wait()
		first := out.String()
		if n := strings.Count(first, "\n"); n != 4 {
			t.Fatalf("first round printed %d lines, want one per row (4):\n%s", n, first)
		}
		if !strings.HasPrefix(first, start.Format(time.RFC3339)+"  ok    "+bundleRow+": 1 anchor(s)") {
			t.Fatalf("first line: %q", first)
		}

		time.Sleep(o.Interval)
		synctest.Wait()
		if got := out.String(); got != first {
			t.Fatalf("nothing changed, yet it printed %q", strings.TrimPrefix(got, first))
		}

		d := w.deployment.DeepCopy()
		d.Status.ReadyReplicas = 0
		if _, err := client.AppsV1().Deployments(ns).UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(o.Interval)
		synctest.Wait()
		want := start.Add(2*o.Interval).Format(time.RFC3339) + "  fail  " + caRow + ": 0 of 2 ready\n"
		if got := strings.TrimPrefix(out.String(), first); got != want {
			t.Fatalf("after the change it printed %q, want %q", got, want)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v after the context ended, want nil", err)
		}
	})
}

func TestValidate(t *testing.T) {
	valid := func() *check.Options {
		return &check.Options{TrustDomain: identity.DefaultTrustDomain, Interval: time.Second, Output: "table"}
	}
	tests := []struct {
		name    string
		mod     func(*check.Options)
		message string
	}{
		{name: "table", mod: func(*check.Options) {}},
		{name: "json", mod: func(o *check.Options) { o.Output = "json" }},
		{name: "yaml", mod: func(o *check.Options) { o.Output = "yaml" }, message: `-o "yaml": use table or json`},
		{name: "bad trust domain", mod: func(o *check.Options) { o.TrustDomain = "Not Valid" }, message: `--trust-domain "Not Valid"`},
		{name: "zero interval", mod: func(o *check.Options) { o.Interval = 0 }, message: "--interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mod(o)
			err := o.Validate()
			var usage *cli.UsageError
			switch {
			case tt.message == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tt.message != "" && (!errors.As(err, &usage) || !strings.Contains(err.Error(), tt.message)):
				t.Fatalf("Validate = %v, want a usage error containing %q", err, tt.message)
			}
		})
	}
}
