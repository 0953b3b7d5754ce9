package dashboard_test

import (
	"context"
	"encoding/base64"
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
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
	"github.com/meshid/meshid/cmd/meshid/internal/dashboard"
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
