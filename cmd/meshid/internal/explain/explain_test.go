package explain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/explain"
	"github.com/meshid/meshid/identity"
)

func authz(t *testing.T, name string, sel map[string]string, spec v1alpha1.AuthorizationPolicySpec) runtime.Object {
	if sel != nil {
		spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	}
	ap := &v1alpha1.AuthorizationPolicy{TypeMeta: metav1.TypeMeta{APIVersion: "meshid.dev/v1alpha1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: spec}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: u}
}

// TestExplainFromTheCluster: the AuthorizationPolicies that select the pod
// are merged as meshid-ca merges them, one that selects other pods is
// left out, and the verdict names the policy and rule; a denial exits 1.
func world(t *testing.T) kube.Connect {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop", Labels: map[string]string{"app": "db"}}}
	cache := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cache-0", Namespace: "shop", Labels: map[string]string{"app": "cache"}}}
	reads := authz(t, "db-reads", map[string]string{"app": "db"}, v1alpha1.AuthorizationPolicySpec{Port: 8080,
		Allow: []v1alpha1.Rule{{Namespace: "shop"}},
		Requests: &v1alpha1.Requests{Rules: []v1alpha1.RequestRule{{Name: "web-reads", From: []v1alpha1.Rule{{ServiceAccount: "shop/web"}},
			Matches: []v1alpha1.RequestMatch{{Method: "GET", Path: &v1alpha1.PathMatch{Value: "/api"}}}}}}})
	trial := authz(t, "db-trial", nil, v1alpha1.AuthorizationPolicySpec{Port: 8080,
		Requests: &v1alpha1.Requests{Mode: "audit", Rules: []v1alpha1.RequestRule{{Name: "ops", From: []v1alpha1.Rule{{Namespace: "ops"}}}}}})
	other := authz(t, "cache", map[string]string{"app": "cache"}, v1alpha1.AuthorizationPolicySpec{Port: 8080,
		Requests: &v1alpha1.Requests{Rules: []v1alpha1.RequestRule{{Name: "anyone"}}}})
	connect := func(kube.Target, string) (*kube.Clients, error) {
		gvr := map[schema.GroupVersionResource]string{v1alpha1.Resource: "AuthorizationPolicyList"}
		return &kube.Clients{Kube: kubefake.NewClientset(pod, cache), Dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), gvr, reads, trial, other)}, nil
	}
	return connect
}

func TestExplainFromTheCluster(t *testing.T) {
	connect := world(t)
	tests := []struct {
		name         string
		from, method string
		path         string
		allowed      bool
		rule, says   string
	}{
		{"allowed", "shop/web", "GET", "/api/orders", true, "web-reads", "allowed by shop/db-reads rule web-reads"},
		{"denied by the rule naming the caller", "shop/web", "DELETE", "/api/orders", false, "web-reads", "(method_not_allowed)"},
		{"normalised before the rules", "shop/web", "GET", "/api/%2e%2e/admin", false, "web-reads", "path_not_allowed"},
		{"no rule names the caller (cache's anyone does not select db-0)", "shop/cart", "GET", "/api", false, "", "peer_not_named"},
		{"the connection rules refuse", "billing/x", "GET", "/api", false, "", "may not connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &explain.Options{Connect: connect, To: "db-0", Namespace: "shop", TrustDomain: identity.DefaultTrustDomain,
				From: tt.from, Port: 8080, Method: tt.method, Path: tt.path, Output: "json"}
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := explain.Run(context.Background(), o, &out)
			var r explain.Result
			if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
				t.Fatalf("%v: %s", jerr, out.Bytes())
			}
			var silent *cli.SilentError
			if r.Allowed != tt.allowed || r.Rule != tt.rule || !strings.Contains(r.Why, tt.says) || (err == nil) != tt.allowed || err != nil && !errors.As(err, &silent) {
				t.Fatalf("explain = %+v, %v; want allowed=%v rule %q saying %q", r, err, tt.allowed, tt.rule, tt.says)
			}
			if !strings.Contains(r.Source, "2 AuthorizationPolicies select it") {
				t.Fatalf("source %q", r.Source)
			}
		})
	}
}

func TestExplainUsage(t *testing.T) {
	for _, o := range []explain.Options{
		{Port: 1, PolicyFile: "f", Output: "table"},
		{From: "plain", PolicyFile: "f", Output: "table"},
		{From: "plain", Port: 1, Output: "table"},
		{From: "plain", Port: 1, PolicyFile: "f", To: "p", Output: "table"},
		{From: "plain", Port: 1, PolicyFile: "f", GRPC: "a.B/C", Method: "GET", Output: "table"},
		{From: "plain", Port: 1, PolicyFile: "f", GRPC: "a.B", Output: "table"},
		{From: "plain", Port: 1, PolicyFile: "f", Output: "yaml"},
	} {
		var u *cli.UsageError
		if err := o.Validate(); !errors.As(err, &u) {
			t.Errorf("%+v: %v, want a usage error", o, err)
		}
	}
}

// TestList: per pod and port, the connection rules and one row per
// request rule, merged per pod as meshid-ca merges them.
func TestList(t *testing.T) {
	o := &explain.ListOptions{Connect: world(t), Namespace: "shop", Output: "table"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := explain.List(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"POD", "PORT", "MODE", "ALLOW", "RULE", "FROM", "REQUESTS"},
		{"cache-0", "8080", "deny", "-", "shop/cache/anyone", "any admitted", "-"},
		{"cache-0", "8080", "deny", "-", "shop/db-trial/ops (audit)", "ns ops", "-"},
		{"db-0", "8080", "deny", "ns shop", "shop/db-reads/web-reads", "sa shop/web", "GET /api/*"},
		{"db-0", "8080", "deny", "ns shop", "shop/db-trial/ops (audit)", "ns ops", "-"},
		{"(other", "ports:", "mode", "deny)"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want %q", i, lines[i], strings.Join(w, "  "))
		}
	}
	o.Output = "json"
	out.Reset()
	if err := explain.List(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	var rows []explain.Row
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 4 || rows[2].Rule != "web-reads" || rows[2].Matches[0] != "GET /api/*" {
		t.Fatalf("json: %v %+v", err, rows)
	}
}
