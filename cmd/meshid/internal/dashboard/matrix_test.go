package dashboard

import (
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sidecar"
	"github.com/meshid/meshid/webhooks/inject"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// injected is pod app in shop, running as sa with labels, injected as the
// webhook does (default mode mode) with the app's container ports.
func injected(t *testing.T, name, sa, mode string, labels map[string]string, ports ...int32) corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels, Annotations: map[string]string{inject.DefaultModeKey: mode}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}
	for _, p := range ports {
		pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: p})
	}
	out, err := inject.Pod(pod, nil, inject.Config{Image: "meshid-proxy:1", CA: "meshid-ca.meshid.svc:8443"})
	if err != nil {
		t.Fatal(err)
	}
	return *out
}

func sas(names ...string) []corev1.ServiceAccount {
	var out []corev1.ServiceAccount
	for _, n := range names {
		out = append(out, corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "shop"}})
	}
	return out
}

func ap(name string, port int32, mode string, sel map[string]string, allow ...v1alpha1.Rule) v1alpha1.AuthorizationPolicy {
	a := v1alpha1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: v1alpha1.AuthorizationPolicySpec{Port: port, Mode: mode, Allow: allow}}
	if sel != nil {
		a.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return a
}

// verdicts is m as "caller pod:port verdict" lines.
func verdicts(m matrix) map[string]string {
	out := map[string]string{}
	for _, r := range m.Rows {
		for i, c := range r.Cells {
			col := m.Columns[i]
			out[r.Caller+" "+col.Pod+":"+strconv.Itoa(col.Port)] = c.Verdict
		}
	}
	return out
}

// TestMatrix: the cells are the proxies' decisions: a deny policy that
// names web on db's port, the default mode on the ports no policy names,
// plain TCP only where the mode accepts it, a skipped port left out, a
// pod without a proxy and a policy that does not compile noted.
func TestMatrix(t *testing.T) {
	db := injected(t, "db-0", "db", "all-unauthenticated", map[string]string{"app": "db"}, 5432, 9100)
	db.Annotations[sidecar.SkipInboundPortsAnnotation] = "9100"
	api := injected(t, "api-0", "api", "deny", map[string]string{"app": "api"}, 8080)
	plain := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	broken := injected(t, "broken", "api", "deny", map[string]string{"app": "broken"}, 7000)
	aps := []v1alpha1.AuthorizationPolicy{
		ap("db", 5432, "deny", map[string]string{"app": "db"}, v1alpha1.Rule{ServiceAccount: "shop/web"}, v1alpha1.Rule{ServiceAccount: "ops/backup"}),
		ap("api-cluster", 8080, "cluster-authenticated", map[string]string{"app": "api"}),
		ap("bad", 7000, "deny", map[string]string{"app": "broken"}, v1alpha1.Rule{Pattern: "spiffe://*/ns/a/sa/b"}),
		ap("partner", 5432, "deny", map[string]string{"app": "db"}, v1alpha1.Rule{ID: "spiffe://partner.example/ns/a/sa/b"}),
	}
	m := matrixOf(td, "shop", []corev1.Pod{db, api, plain, broken}, sas("web", "db", "evil"), aps)
	want := map[string]string{
		"spiffe://cluster.local/ns/shop/sa/web db-0:5432":   "allow",
		"spiffe://cluster.local/ns/shop/sa/evil db-0:5432":  "deny",
		"spiffe://cluster.local/ns/ops/sa/backup db-0:5432": "allow",
		plainCaller + " db-0:5432":                          "deny",
		"spiffe://cluster.local/ns/shop/sa/evil api-0:8080": "allow",
		plainCaller + " api-0:8080":                         "deny",
		// a federated identity: admitted where a policy names it, never
		// by cluster-authenticated
		"spiffe://partner.example/ns/a/sa/b db-0:5432":  "allow",
		"spiffe://partner.example/ns/a/sa/b api-0:8080": "deny",
	}
	got := verdicts(m)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	var cols []string
	for _, c := range m.Columns {
		cols = append(cols, c.Pod+":"+strconv.Itoa(c.Port)+" "+string(c.Mode)+" "+strings.Join(c.Policies, ","))
	}
	if strings.Join(cols, "|") != "api-0:8080 cluster-authenticated api-cluster|db-0:5432 deny db,partner" {
		t.Errorf("columns %q, want api-0:8080 and db-0:5432 (9100 skipped, broken left out)", cols)
	}
	notes := strings.Join(m.Notes, "\n")
	for _, n := range []string{"pod broken: its AuthorizationPolicies do not compile", "must name its trust domain literally", "pod legacy is not meshed"} {
		if !strings.Contains(notes, n) {
			t.Errorf("notes lack %q:\n%s", n, notes)
		}
	}
	// A port no policy names has the pod's default mode: plain passes.
	m = matrixOf(td, "shop", []corev1.Pod{db}, sas("web"), nil)
	if got := verdicts(m); got[plainCaller+" db-0:5432"] != "allow" || got["spiffe://cluster.local/ns/shop/sa/web db-0:5432"] != "allow" {
		t.Errorf("default all-unauthenticated: %v", got)
	}
	if m.Columns[0].Mode != "all-unauthenticated" {
		t.Errorf("mode %q", m.Columns[0].Mode)
	}
}

// TestMatrixRequestRules: on a port whose request rules decide each
// request, a caller a rule allows everything is allow, one a rule allows
// some requests is "requests", one no rule names is deny, and under audit
// mode audit, all by the proxy's own Decide.
func TestMatrixRequestRules(t *testing.T) {
	api := injected(t, "api-0", "api", "deny", map[string]string{"app": "api"}, 8080)
	rules := func(mode string) v1alpha1.AuthorizationPolicy {
		a := ap("api-"+mode, 8080, "deny", map[string]string{"app": "api"}, v1alpha1.Rule{ServiceAccount: "shop/web"}, v1alpha1.Rule{ServiceAccount: "shop/admin"}, v1alpha1.Rule{ServiceAccount: "shop/evil"})
		a.Spec.Requests = &v1alpha1.Requests{Mode: mode, Rules: []v1alpha1.RequestRule{
			{Name: "admin-all", From: []v1alpha1.Rule{{ServiceAccount: "shop/admin"}}},
			{Name: "web-get", From: []v1alpha1.Rule{{ServiceAccount: "shop/web"}}, Matches: []v1alpha1.RequestMatch{{Method: "GET", Path: &v1alpha1.PathMatch{Type: "PathPrefix", Value: "/api"}}}},
		}}
		return a
	}
	for _, tt := range []struct {
		mode string
		want map[string]string
	}{
		{"enforce", map[string]string{"admin": "allow", "web": "requests", "evil": "deny"}},
		{"audit", map[string]string{"admin": "allow", "web": "audit", "evil": "audit"}},
	} {
		m := matrixOf(td, "shop", []corev1.Pod{api}, sas("web", "admin", "evil"), []v1alpha1.AuthorizationPolicy{rules(tt.mode)})
		got := verdicts(m)
		for sa, want := range tt.want {
			if v := got["spiffe://cluster.local/ns/shop/sa/"+sa+" api-0:8080"]; v != want {
				t.Errorf("%s: %s on api-0:8080 is %q, want %q", tt.mode, sa, v, want)
			}
		}
	}
}
