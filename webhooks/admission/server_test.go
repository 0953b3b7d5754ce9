package admission_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/webhooks/admission"
	"github.com/meshid/meshid/webhooks/inject"
)

func newServer(t testing.TB) http.Handler {
	t.Helper()
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.NamespaceLabel: "enabled"}}})
	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{v1alpha1.Resource: "AuthorizationPolicyList"})
	cert, err := admission.NewCert(admission.CertConfig{Client: client, Namespace: "meshid", CASecret: "ca", IPs: nil, DNSNames: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := admission.New(admission.Config{
		Client: client, Dynamic: dyn, TrustDomain: spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain),
		Inject: inject.Config{Image: "proxy:1", CA: "ca:8443"}, Listen: "127.0.0.1:0", Cert: cert,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler()
}

func post(h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	return rec
}

func reviewOf(t testing.TB, kind string, op admissionv1.Operation, ns string, obj any) []byte {
	t.Helper()
	raw, _ := json.Marshal(obj)
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &admissionv1.AdmissionRequest{UID: "1", Kind: metav1.GroupVersionKind{Kind: kind}, Operation: op, Namespace: ns, Object: runtime.RawExtension{Raw: raw}},
	})
	return b
}

func decode(t testing.TB, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &ar); err != nil || ar.Response == nil || ar.Response.UID != "1" {
		t.Fatalf("not an AdmissionReview answering UID 1: %v %s", err, rec.Body)
	}
	return ar.Response
}

func TestInjectAndValidate(t *testing.T) {
	h := newServer(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "a"}}}}
	resp := decode(t, post(h, "/inject", reviewOf(t, "Pod", admissionv1.Create, "shop", pod)))
	if !resp.Allowed || resp.PatchType == nil || !strings.Contains(string(resp.Patch), "meshid-proxy") {
		t.Fatalf("inject: %+v", resp)
	}
	ok := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: v1alpha1.AuthorizationPolicySpec{Port: 8443, Allow: []v1alpha1.Rule{{ServiceAccount: "shop/web"}}}}
	if resp := decode(t, post(h, "/validate", reviewOf(t, "AuthorizationPolicy", admissionv1.Create, "shop", ok))); !resp.Allowed {
		t.Fatalf("a valid policy was refused: %+v", resp.Result)
	}
	bad := &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: v1alpha1.AuthorizationPolicySpec{Port: 8443, Allow: []v1alpha1.Rule{{ID: "not-an-id"}}}}
	if resp := decode(t, post(h, "/validate", reviewOf(t, "AuthorizationPolicy", admissionv1.Create, "shop", bad))); resp.Allowed || !strings.Contains(resp.Result.Message, "not-an-id") {
		t.Fatalf("an invalid policy: %+v", resp)
	}
	if rec := post(h, "/inject", []byte("{")); rec.Code != http.StatusBadRequest {
		t.Fatalf("garbage: %d", rec.Code)
	}
}

// FuzzAdmission: whatever the body, the server answers 400 or a well-formed
// AdmissionReview for the request's UID, and never panics.
func FuzzAdmission(f *testing.F) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{inject.InboundAnnotation: "1=2"}}}
	f.Add("/inject", reviewOf(f, "Pod", admissionv1.Create, "shop", pod))
	f.Add("/validate", reviewOf(f, "AuthorizationPolicy", admissionv1.Create, "shop", &v1alpha1.AuthorizationPolicy{}))
	f.Add("/inject", []byte(`{"request":{"uid":"1","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"hostNetwork":true}}}}`))
	h := newServer(f)
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if path != "/inject" && path != "/validate" {
			path = "/inject"
		}
		rec := post(h, path, body)
		if rec.Code == http.StatusBadRequest {
			return
		}
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &ar); err != nil || ar.Response == nil {
			t.Fatalf("status %d with a body that is not an AdmissionReview: %s", rec.Code, rec.Body)
		}
	})
}

// TestValidateRequestRules: request rules go through the same policy
// checks the proxy runs: valid ones are admitted, and a path the proxy
// would never see as written, a gRPC match with a method, or a rule
// without a name are refused saying what to write.
func TestValidateRequestRules(t *testing.T) {
	h := newServer(t)
	spec := func(r v1alpha1.RequestRule) *v1alpha1.AuthorizationPolicy {
		return &v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: v1alpha1.AuthorizationPolicySpec{
			Port: 8080, Allow: []v1alpha1.Rule{{Namespace: "shop"}},
			Requests: &v1alpha1.Requests{Mode: "audit", Rules: []v1alpha1.RequestRule{r}},
		}}
	}
	tests := []struct {
		name string
		rule v1alpha1.RequestRule
		says string // empty: admitted
	}{
		{"valid", v1alpha1.RequestRule{Name: "web-reads", From: []v1alpha1.Rule{{ServiceAccount: "shop/web"}},
			Matches: []v1alpha1.RequestMatch{{Method: "GET", Path: &v1alpha1.PathMatch{Value: "/api"}}, {GRPC: &v1alpha1.GRPCMatch{Service: "payments.v1.*", Method: "Get"}}}}, ""},
		{"path not normal", v1alpha1.RequestRule{Name: "a", Matches: []v1alpha1.RequestMatch{{Path: &v1alpha1.PathMatch{Value: "/api/../admin"}}}}, `write it as "/admin"`},
		{"grpc with a method", v1alpha1.RequestRule{Name: "a", Matches: []v1alpha1.RequestMatch{{Method: "POST", GRPC: &v1alpha1.GRPCMatch{Service: "a.B"}}}}, "grpc excludes method and path"},
		{"no name", v1alpha1.RequestRule{Matches: []v1alpha1.RequestMatch{{Method: "GET"}}}, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := decode(t, post(h, "/validate", reviewOf(t, "AuthorizationPolicy", admissionv1.Create, "shop", spec(tt.rule))))
			if tt.says == "" {
				if !resp.Allowed {
					t.Fatalf("refused: %+v", resp.Result)
				}
				return
			}
			if resp.Allowed || !strings.Contains(resp.Result.Message, tt.says) || !strings.Contains(resp.Result.Message, "shop/db") {
				t.Fatalf("%+v; want a refusal naming shop/db and saying %q", resp.Result, tt.says)
			}
		})
	}
}
