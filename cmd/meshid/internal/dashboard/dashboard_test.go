package dashboard_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
	"github.com/meshid/meshid/cmd/meshid/internal/dashboard"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	rotator "github.com/meshid/meshid/rotation/anchor"
	"github.com/meshid/meshid/webhooks/inject"
)

var now = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// serve starts the dashboard over w and returns its base URL.
func serve(t *testing.T, w *checktest.World) string {
	t.Helper()
	o := &dashboard.Options{Check: *w.Options(), Refresh: 200 * time.Millisecond, Clock: clocktesting.NewFakePassiveClock(now), Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	c, err := o.Check.Connect(o.Check.Cluster, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.Handler = dashboard.Handler(o, c, portOf(t, srv.Listener.Addr().String()))
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func portOf(t *testing.T, addr string) int {
	u, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

func get(t *testing.T, rawURL, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", rawURL, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestValidate: what cannot work is a usage error saying what to use.
func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name, message string
		change        func(*dashboard.Options)
	}{
		{"defaults", "", func(*dashboard.Options) {}},
		{"ipv6 loopback", "", func(o *dashboard.Options) { o.Address = "::1" }},
		{"not loopback", "the dashboard listens on loopback only", func(o *dashboard.Options) { o.Address = "0.0.0.0" }},
		{"port", "use 0 to 65535", func(o *dashboard.Options) { o.Port = 70000 }},
		{"refresh too often", "--refresh 10ms: use 100ms or more", func(o *dashboard.Options) { o.Refresh = 10 * time.Millisecond }},
		{"negative refresh", "--refresh -1s", func(o *dashboard.Options) { o.Refresh = -time.Second }},
		{"trust domain", "--trust-domain", func(o *dashboard.Options) { o.Check.TrustDomain = "Not A Domain" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := &dashboard.Options{Address: "127.0.0.1", Port: 8099, Refresh: 10 * time.Second, Check: check.Options{TrustDomain: "cluster.local"}}
			tt.change(o)
			clitest.WantUsage(t, "Validate", o.Validate(), tt.message)
		})
	}
}

// TestHostRefused: a request naming another host (a DNS name rebound to
// 127.0.0.1) is refused with what to open instead; loopback names pass.
func TestHostRefused(t *testing.T) {
	base := serve(t, checktest.New(t, now))
	port := strconv.Itoa(portOf(t, strings.TrimPrefix(base, "http://")))
	for _, host := range []string{"evil.example:" + port, "127.0.0.1:1", "localhost", "meshid.internal:" + port} {
		code, body := get(t, base+"/trust", host)
		if code != http.StatusMisdirectedRequest || !strings.Contains(body, "open http://127.0.0.1:"+port+"/") {
			t.Errorf("Host %s: %d %q, want 421 naming the address to open", host, code, body)
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		if code, _ := get(t, base+"/trust", host); code != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", host, code)
		}
	}
}

// TestTrustPage: the page shows check's rows and hints (check.Report, the
// same call as meshid check), the time to outage, and the anchor and the
// issuer on the timeline at their real expiry dates; it carries no key.
func TestTrustPage(t *testing.T) {
	w := checktest.New(t, now)
	base := serve(t, w)
	code, page := get(t, base+"/trust", "")
	if code != http.StatusOK {
		t.Fatalf("GET /trust: %d\n%s", code, page)
	}
	c, _ := w.Options().Connect(w.Options().Cluster, "test")
	rep := check.Report(context.Background(), w.Options(), c, now)
	for _, row := range rep.Rows {
		if !strings.Contains(page, htmlText(row.Check)) || !strings.Contains(page, htmlText(row.Detail)) {
			t.Errorf("the page lacks check's row %q: %q", row.Check, row.Detail)
		}
	}
	for what, kp := range map[string]interface{ NotAfter() time.Time }{"anchor": w.Anchor, "issuer": w.Issuer} {
		date := kp.NotAfter().UTC().Format("2006-01-02")
		if !strings.Contains(page, `data-expires="`+date+`"`) {
			t.Errorf("the timeline has no mark at the %s's expiry %s", what, date)
		}
	}
	if !strings.Contains(page, "Time to outage: <time") || !strings.Contains(page, "anchor warning: 60 d") {
		t.Errorf("the page lacks the time to outage or the warning window:\n%s", page)
	}
	key := w.IssuerSecret.Data[corev1.TLSPrivateKeyKey]
	for _, secret := range []string{"PRIVATE KEY", base64.StdEncoding.EncodeToString(key)[:40], string(key[40:80])} {
		if strings.Contains(page, secret) {
			t.Errorf("the page holds key material %q", secret)
		}
	}
}

// TestNamesEscaped: a namespace named with markup renders as text.
func TestNamesEscaped(t *testing.T) {
	w := checktest.New(t, now)
	w.Opts = func(o *check.Options) { o.Namespace = `<script>alert(1)</script>` }
	_, page := get(t, serve(t, w)+"/trust", "")
	if strings.Contains(page, "<script>alert") {
		t.Fatalf("the namespace's markup reached the page unescaped:\n%s", page)
	}
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("the namespace is not on the page as text:\n%s", page)
	}
}

// htmlText is s as html/template writes it in text.
func htmlText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;", "+", "&#43;").Replace(s)
}

// TestFleetPage: every reported proxy is listed, and one that holds an old
// bundle (lagging) comes first with check's detail, ahead of healthy ones.
func TestFleetPage(t *testing.T) {
	w := checktest.New(t, now)
	ok1 := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/a-web"), "aaaa000000000001")
	ok2 := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/b-api"), "aaaa000000000002")
	lag := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/z-cart"), "ffff000000000003")
	lag.BundleSHA256 = strings.Repeat("ab", 32)
	w.Fleet = []fleet.Proxy{ok1, ok2, lag}
	code, page := get(t, serve(t, w)+"/fleet", "")
	if code != http.StatusOK {
		t.Fatalf("GET /fleet: %d\n%s", code, page)
	}
	at := func(s string) int {
		i := strings.Index(page, s)
		if i < 0 {
			t.Fatalf("the fleet page lacks %q:\n%s", s, page)
		}
		return i
	}
	if !(at(lag.ID) < at(ok1.ID) && at(ok1.ID) < at(ok2.ID)) {
		t.Errorf("the lagging proxy is not first:\n%s", page)
	}
	at("holds bundle abababababab")
	at("3 proxies: 0 failing, 1 lagging or warning, 2 ok.")
}

// TestFleetRotation: a rotation stored at stage Add shows its stages (the
// first current, the others pending) with rotate-anchor status's counts:
// one of two proxies holds the two-anchor bundle, the other is named as
// lagging.
func TestFleetRotation(t *testing.T) {
	w := checktest.New(t, now)
	next := pkitest.CA(t, nil, "next anchor", now.Add(-time.Hour), checktest.Year)
	both, err := bundle.Parse(append(w.Anchor.CertPEM(), next.CertPEM()...))
	if err != nil {
		t.Fatal(err)
	}
	done := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), "aaaa000000000001")
	done.BundleSHA256 = both.SHA256()
	lag := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart"), "ffff000000000003")
	w.Fleet = []fleet.Proxy{done, lag}
	state, _ := json.Marshal(rotator.State{Stage: rotator.Add, Started: now.Add(-time.Minute), StageStarted: now.Add(-time.Minute), OldBundle: string(w.Anchor.CertPEM()), NewAnchor: string(next.CertPEM()), Message: "waiting for the proxies"})
	w.Objects = append(w.Objects, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: checktest.NS, Name: rotator.StateConfigMap}, Data: map[string]string{rotator.StateKey: string(state)}})
	code, page := get(t, serve(t, w)+"/fleet", "")
	if code != http.StatusOK {
		t.Fatalf("GET /fleet: %d\n%s", code, page)
	}
	for _, want := range []string{
		`data-stage="Add">Stage <strong>Add</strong>`,
		`<li class="progress-current" data-stage="Add">`,
		`<li class="progress-pending" data-stage="SwitchIssuer">`,
		`data-ready="1" data-total="2">Converged 1/2 proxies holding the bundle with both anchors`,
		"lagging: " + lag.ID,
		"waiting for the proxies",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the fleet page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "lagging: "+done.ID) {
		t.Errorf("the converged proxy is named as lagging:\n%s", page)
	}
}

// TestFleetRotationStuck: a stage waiting past its deadline is reported
// stuck, with what to do, as rotate-anchor status says; finished stages
// show what they took.
func TestFleetRotationStuck(t *testing.T) {
	w := checktest.New(t, now)
	next := pkitest.CA(t, nil, "next anchor", now.Add(-time.Hour), checktest.Year)
	state, _ := json.Marshal(rotator.State{Stage: rotator.SwitchIssuer, Started: now.Add(-time.Hour), StageStarted: now.Add(-20 * time.Minute),
		OldBundle: string(w.Anchor.CertPEM()), NewAnchor: string(next.CertPEM()), Timings: map[rotator.Stage]string{rotator.Add: "40m0s"},
		Wait: &rotator.StoredWait{Goal: "every CA replica signing with the new issuer", Since: now.Add(-20 * time.Minute), Deadline: now.Add(-10 * time.Minute)}})
	w.Objects = append(w.Objects, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: checktest.NS, Name: rotator.StateConfigMap}, Data: map[string]string{rotator.StateKey: string(state)}})
	_, page := get(t, serve(t, w)+"/fleet", "")
	for _, want := range []string{
		`<li class="progress-done" data-stage="Add"><strong>Add</strong> done, took 40m0s`,
		`<li class="progress-current" data-stage="SwitchIssuer">`,
		"Stuck: stage SwitchIssuer has waited for every CA replica signing with the new issuer since",
		"<code>meshid rotate-anchor resume</code>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the fleet page lacks %q:\n%s", want, page)
		}
	}
}

// TestFleetRotationForbidden: when the operator may not read the
// rotation, the section says why, and the proxies are still listed.
func TestFleetRotationForbidden(t *testing.T) {
	w := checktest.New(t, now)
	w.Fleet = []fleet.Proxy{w.Reported(t, checktest.Web, "aaaa000000000001")}
	w.React = func(c *fake.Clientset) {
		c.PrependReactor("get", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if name := a.(k8stesting.GetAction).GetName(); name == rotator.StateConfigMap {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, name, errors.New("no RBAC rule allows it"))
			}
			return false, nil, nil
		})
	}
	_, page := get(t, serve(t, w)+"/fleet", "")
	for _, want := range []string{`<p class="problem">read the rotation state: configmaps &#34;meshid-rotation&#34; is forbidden`, "what meshid rotate-anchor status reads, with your RBAC", checktest.Web.String()} {
		if !strings.Contains(page, want) {
			t.Errorf("the fleet page lacks %q:\n%s", want, page)
		}
	}
}

// TestFleetNoRotation: with no rotation stored the page says so.
func TestFleetNoRotation(t *testing.T) {
	_, page := get(t, serve(t, checktest.New(t, now))+"/fleet", "")
	if !strings.Contains(page, "No rotation has been started") {
		t.Fatalf("the fleet page does not say no rotation was started:\n%s", page)
	}
}

// TestPolicyPage: the namespace's matrix from its pods (as injected),
// service accounts and AuthorizationPolicies; a policy whose rule holds
// markup is noted as text; a namespace parameter with markup is refused
// as text.
func TestPolicyPage(t *testing.T) {
	w := checktest.New(t, now)
	db := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop", Labels: map[string]string{"app": "db"}},
		Spec: corev1.PodSpec{ServiceAccountName: "db", Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 5432}}}}}}
	db, err := inject.Pod(db, map[string]string{inject.DefaultModeKey: "deny"}, inject.Config{Image: "meshid-proxy:1", CA: "meshid-ca.meshid.svc:8443"})
	if err != nil {
		t.Fatal(err)
	}
	w.Objects = append(w.Objects, db, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	for _, sa := range []string{"web", "db", "evil"} {
		w.Objects = append(w.Objects, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: "shop"}})
	}
	policy := func(name, labelApp string, rule map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "meshid.dev/v1alpha1", "kind": "AuthorizationPolicy",
			"metadata": map[string]any{"name": name, "namespace": "shop"},
			"spec":     map[string]any{"port": int64(5432), "mode": "deny", "selector": map[string]any{"matchLabels": map[string]any{"app": labelApp}}, "allow": []any{rule}},
		}}
	}
	w.Dynamic = append(w.Dynamic, policy("db", "db", map[string]any{"serviceAccount": "shop/web"}))
	base := serve(t, w)
	_, page := get(t, base+"/policy?namespace=shop", "")
	for _, want := range []string{
		`<a href="/policy?namespace=shop">shop</a>`,
		`<th>db-0:5432<br><span class="mode">deny</span><br><span class="policies">db</span></th>`,
		`<tr><th>spiffe://cluster.local/ns/shop/sa/web</th><td class="verdict-allow"`,
		`<tr><th>spiffe://cluster.local/ns/shop/sa/evil</th><td class="verdict-deny" title="no allow rule names it (mode deny)">deny</td>`,
		`<tr><th>plain TCP (no certificate)</th><td class="verdict-deny"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the policy page lacks %q:\n%s", want, page)
		}
	}

	// A rule with markup (the CRD's schema does not forbid it) makes the
	// pod's policy refused; the note shows it as text.
	w.Dynamic = append(w.Dynamic, policy("xss", "db", map[string]any{"id": "spiffe://cluster.local/ns/<script>alert(1)</script>/sa/x"}))
	base = serve(t, w)
	_, page = get(t, base+"/policy?namespace=shop", "")
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(page, "its AuthorizationPolicies do not compile") {
		t.Errorf("the rule's markup is not on the page as text in the note:\n%s", page)
	}
	_, page = get(t, base+"/policy?namespace="+url.QueryEscape("<script>alert(1)</script>"), "")
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "is not a namespace name") {
		t.Errorf("the namespace parameter's markup reached the page, or was not refused:\n%s", page)
	}
}
