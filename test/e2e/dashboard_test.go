package e2e_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/meshid/dashboardtest"
	"github.com/meshid/meshid/webhooks/inject"
)

var dashboardScreenshots = flag.String("dashboard-screenshots", "", "TestDashboard writes the pages' screenshots into this directory (docs/images)")

// proxyHeartbeat is how often a proxy reports to the CA (proxy/report.go):
// a proxy made to lag must show on the fleet page within it.
const proxyHeartbeat = 10 * time.Second

// TestDashboard: meshid dashboard against a real control plane, meshid-ca
// and three proxies, in headless Chromium: every page renders with no
// console error; the timeline marks the anchor's and the issuer's real
// expiry dates; a proxy made to lag (frozen while a rotation adds an
// anchor) shows on the fleet page, lagging, within its report interval,
// and the rotation's stages follow live to Done without a reload; an
// AuthorizationPolicy applied shows in the matrix, which agrees with real
// connections; markup in a policy, in the page's address and in the
// namespace renders as text.
func TestDashboard(t *testing.T) {
	t.Parallel()
	e := need(t)
	ctx := context.Background()
	applyPolicyCRD(t)
	ca := startCA(t, "--fleet-report-interval", "500ms", "--replica", "ca-0", "--watch-policies")
	ns := namespace(t, "dash")
	for _, sa := range []string{"web", "db", "evil"} {
		serviceAccount(t, ns, sa)
	}
	dbIn, webIn, webOut, evilOut := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	_, dbPort, _ := strings.Cut(dbIn, ":")
	_, webPort, _ := strings.Cut(webIn, ":")
	// db-0 and web-0 run their proxies with these arguments, and say so in
	// their Pods as injected pods do: the matrix reads them there.
	dbArgs := []string{"--inbound=" + dbIn + "=" + app(t, "db"), "--policy-from-ca", "--pod-name=db-0", "--default-mode=deny"}
	webArgs := []string{"--outbound=" + webOut + "=" + dbIn, "--inbound=" + webIn + "=" + app(t, "web"), "--policy-from-ca", "--pod-name=web-0", "--default-mode=all-unauthenticated"}
	meshedPod(t, ns, "db-0", "db", "db", dbArgs)
	meshedPod(t, ns, "web-0", "web", "web", webArgs)
	db := startProxy(t, ca, ns, "db", dbArgs...)
	startProxy(t, ca, ns, "web", webArgs...)
	startProxy(t, ca, ns, "evil", "--outbound", evilOut+"="+dbIn)
	dbID := "spiffe://cluster.local/ns/" + ns + "/sa/db"
	webID, evilID := "spiffe://cluster.local/ns/"+ns+"/sa/web", "spiffe://cluster.local/ns/"+ns+"/sa/evil"

	base := startDashboard(t, "-n", ca.ns, "--deployment", "", "--refresh", "300ms")
	b := dashboardtest.Start(t, 6*time.Minute) // bounds the whole test, under a loaded CI too
	// pageSays polls the open page (no reload) until the script returns "".
	pageSays := func(what string, timeout time.Duration, script string) time.Duration {
		t.Helper()
		start := time.Now()
		eventually(t, timeout, func() error {
			got, err := dashboardtest.Eval[string](b, script)
			if err != nil {
				return fmt.Errorf("%s: %v", what, err)
			}
			if got != "" {
				return fmt.Errorf("%s: %s", what, got)
			}
			return nil
		})
		return time.Since(start)
	}
	open := func(path, selector string) {
		t.Helper()
		if err := b.Open(base+path, selector); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := b.Styled(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if _, err := dashboardtest.Eval[any](b, `window.meshidMark = 1`); err != nil {
			t.Fatal(err)
		}
	}
	notReloaded := func(path string) {
		t.Helper()
		if mark, err := dashboardtest.Eval[int](b, `window.meshidMark || 0`); err != nil || mark != 1 {
			t.Errorf("%s: the page was reloaded instead of updated in place (%d, %v)", path, mark, err)
		}
	}

	// Trust: the real anchor's and issuer's expiry dates on the timeline.
	open("/trust", "#timeline .mark")
	marks := `Array.from(document.querySelectorAll("#timeline .mark")).map(m => m.dataset.expires)`
	for what, notAfter := range map[string]time.Time{"anchor": ca.anchor.Cert.NotAfter, "issuer": ca.issuer.Cert.NotAfter} {
		pageSays("the "+what+"'s expiry on the timeline", 10*time.Second, `(`+marks+`.includes(`+js(notAfter.UTC().Format("2006-01-02"))+`)) ? "" : "marks: " + `+marks+`.join(", ")`)
	}
	b.Screenshot(t, *dashboardScreenshots, "dashboard-trust.png")

	// Policy: no AuthorizationPolicy yet, so db's port (default deny)
	// refuses everyone and web's (default all-unauthenticated) takes
	// everyone, plain TCP too, as real connections say; a policy that
	// allows web on db shows in the open page, and connections follow.
	allowed := func(out string) bool { _, err := get(fresh, out, "x"); return err == nil }
	open("/policy?namespace="+ns, "#matrix table")
	cellIs := func(caller, column, verdict string) string {
		return `(function (caller, col, want) {
  const t = document.querySelector("#matrix table");
  if (!t) { return "no matrix"; }
  const i = Array.from(t.tHead.rows[0].cells).findIndex(h => h.firstChild && h.firstChild.textContent === col);
  if (i < 0) { return "no column " + col; }
  for (const r of t.tBodies[0].rows) {
    if (r.cells[0].textContent === caller) { return r.cells[i].textContent === want ? "" : caller + ": " + r.cells[i].textContent + " (" + r.cells[i].title + ")"; }
  }
  return "no row " + caller;
})(` + js(caller) + `, ` + js(column) + `, ` + js(verdict) + `)`
	}
	dbCol, webCol := "db-0:"+dbPort, "web-0:"+webPort
	pageSays("no policy: web denied on db", 10*time.Second, cellIs(webID, dbCol, "deny"))
	pageSays("no policy: evil denied on db", time.Second, cellIs(evilID, dbCol, "deny"))
	pageSays("no policy: plain denied on db", time.Second, cellIs("plain TCP (no certificate)", dbCol, "deny"))
	pageSays("web's default all-unauthenticated: evil allowed", time.Second, cellIs(evilID, webCol, "allow"))
	pageSays("web's default all-unauthenticated: plain allowed", time.Second, cellIs("plain TCP (no certificate)", webCol, "allow"))
	if allowed(webOut) || allowed(evilOut) {
		t.Fatalf("with no policy and default mode deny, web %v and evil %v reach db; the matrix says deny", allowed(webOut), allowed(evilOut))
	}
	// Plain TCP, as the matrix says: refused by db's proxy, let through
	// to web's app.
	if got, err := get(fresh, dbIn, "plain"); err == nil {
		t.Fatalf("plain TCP reached db (%q); the matrix says deny", got)
	}
	if got, err := get(fresh, webIn, "plain"); err != nil || got != "hello from web: plain" {
		t.Fatalf("plain TCP to web: %q, %v; the matrix says allow", got, err)
	}
	policyYAML := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: db\nspec:\n  selector:\n    matchLabels: {app: db}\n  port: %s\n  mode: deny\n  allow:\n  - serviceAccount: %s/web\n", dbPort, ns)
	if out, err := kubectl(t, policyYAML, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	took := pageSays("the policy in the matrix: web allowed on db", 10*time.Second, cellIs(webID, dbCol, "allow"))
	pageSays("evil still denied on db", time.Second, cellIs(evilID, dbCol, "deny"))
	t.Logf("policy page: the applied AuthorizationPolicy showed after %s", took.Round(time.Millisecond))
	notReloaded("/policy")
	eventually(t, 10*time.Second, func() error {
		if !allowed(webOut) || allowed(evilOut) {
			return fmt.Errorf("the matrix says web allow and evil deny; connections: web %v, evil %v", allowed(webOut), allowed(evilOut))
		}
		return nil
	})
	b.Screenshot(t, *dashboardScreenshots, "dashboard-policy.png")

	// Markup in a policy (the CRD's schema allows any string; only the
	// validating webhook, not running here, refuses it) and in the
	// address renders as text, and no script of it runs (the CSP would
	// report one as a console error).
	xss := "<script>window.meshidXSS = 1</script>"
	meshedPod(t, ns, "xss-0", "db", "xss", []string{"--policy-from-ca", "--default-mode=deny"})
	xssYAML := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: xss\nspec:\n  selector:\n    matchLabels: {app: xss}\n  port: 8080\n  mode: deny\n  allow:\n  - id: %q\n", "spiffe://cluster.local/ns/"+xss+"/sa/x")
	if out, err := kubectl(t, xssYAML, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	asText := `(document.querySelectorAll("#matrix script, main script").length === 0 && !window.meshidXSS && document.querySelector("main").textContent.includes(` + js(xss) + `)) ? "" : "not shown as text"`
	pageSays("the policy's markup as text", 10*time.Second, asText)
	open("/policy?namespace="+url.QueryEscape(xss), "#matrix")
	pageSays("the address's markup as text", 5*time.Second, asText)
	// And a namespace named with markup: -n takes any string, and the
	// trust page names it in check's rows.
	xssBase := startDashboard(t, "-n", xss, "--deployment", "", "--refresh", "300ms")
	if err := b.Open(xssBase+"/trust", "#checks"); err != nil {
		t.Fatalf("/trust of namespace %q: %v", xss, err)
	}
	pageSays("the namespace's markup as text", 5*time.Second, asText)

	// Fleet: the three proxies; then db frozen while a rotation adds an
	// anchor: it lags, and shows so within its report interval.
	open("/fleet", "#fleet table")
	for _, id := range []string{dbID, webID, evilID} {
		pageSays(id+" on the fleet page", 15*time.Second, `Array.from(document.querySelectorAll("#fleet td:first-child")).some(td => td.textContent === `+js(id)+`) ? "" : "missing"`)
	}
	if err := syscall.Kill(db.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	rotation, rotated := spawn(t, "meshid", "rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"),
		"-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig, "--stage-timeout", "2m", "--reissue-window", "2s")
	var added time.Time
	eventually(t, 30*time.Second, func() error {
		cm, err := e.client.CoreV1().ConfigMaps(ca.ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if b, err := bundle.Parse([]byte(cm.Data[bundle.Key])); err != nil || len(b.Anchors()) != 2 {
			return fmt.Errorf("the rotation has not published the two-anchor bundle yet")
		}
		added = time.Now()
		return nil
	})
	pageSays("db lagging on the fleet page", proxyHeartbeat, `(function (id) {
  const row = Array.from(document.querySelectorAll("#fleet tr")).find(tr => tr.cells[0] && tr.cells[0].textContent === id);
  if (!row || row.className === "status-ok") { return "db's row: " + (row ? row.className + " " + row.textContent : "none"); }
  const rot = document.querySelector("#rotation");
  if (!rot.querySelector('p.headline[data-stage="Add"]') || !rot.textContent.includes("lagging: " + id)) { return "rotation: " + rot.textContent; }
  const c = rot.querySelector(".converged");
  return c && c.dataset.ready === "2" && c.dataset.total === "3" ? "" : "converged: " + (c ? c.textContent : "none");
})(`+js(dbID)+`)`)
	t.Logf("fleet page: the frozen proxy showed as lagging %s after the two-anchor bundle was published (its report interval: %s)", (time.Since(added)).Round(time.Millisecond), proxyHeartbeat)
	b.Screenshot(t, *dashboardScreenshots, "dashboard-fleet.png")

	// Back, db catches up and the rotation runs to Done; the open page
	// follows every stage it sees, without a reload.
	if err := syscall.Kill(db.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var seen []string
	eventually(t, 2*time.Minute, func() error {
		stage, err := dashboardtest.Eval[string](b, `(document.querySelector("#rotation p.headline") || {dataset: {}}).dataset.stage || ""`)
		if err != nil {
			return err
		}
		if stage != "" && (len(seen) == 0 || seen[len(seen)-1] != stage) {
			seen = append(seen, stage)
		}
		if stage != "Done" {
			return fmt.Errorf("the page shows stage %q (seen %v)", stage, seen)
		}
		return nil
	})
	t.Logf("fleet page: stages seen live: %v", seen)
	notReloaded("/fleet")
	if !slices.Contains(seen, "Add") || len(seen) < 2 {
		t.Errorf("the page did not follow the rotation: stages seen %v", seen)
	}
	select {
	case err := <-rotated:
		if err != nil {
			t.Fatalf("rotate-anchor start: %v\n%s", err, rotation.logs(t))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("rotate-anchor start did not end after the page showed Done\n%s", rotation.logs(t))
	}

	// The new anchor's real expiry on the timeline.
	cm, err := e.client.CoreV1().ConfigMaps(ca.ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now, err := bundle.Parse([]byte(cm.Data[bundle.Key]))
	if err != nil {
		t.Fatal(err)
	}
	open("/trust", "#timeline .mark")
	pageSays("the new anchor's expiry on the timeline", 10*time.Second, `(`+marks+`.includes(`+js(now.Anchors()[0].NotAfter.UTC().Format("2006-01-02"))+`)) ? "" : "marks: " + `+marks+`.join(", ")`)

	if problems := b.Finish(t); len(problems) > 0 {
		t.Errorf("console errors, warnings or exceptions: %v", problems)
	}
}

// js is s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// meshedPod creates pod name of ns running as sa, labelled app=label,
// with a meshid-proxy container of args as injection writes it (no
// kubelet runs it; the test runs that proxy itself).
func meshedPod(t *testing.T, ns, name, sa, label string, args []string) {
	t.Helper()
	_, err := need(t).client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": label}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{
			{Name: "app", Image: "example.invalid/app:1"},
			{Name: inject.ContainerName, Image: "example.invalid/meshid-proxy:1", Args: args},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// startDashboard runs meshid dashboard on a free port with the admin
// kubeconfig and args, and returns its base URL.
func startDashboard(t *testing.T, args ...string) string {
	t.Helper()
	p, exited := spawn(t, "meshid", append([]string{"dashboard", "--kubeconfig", need(t).cluster.Kubeconfig, "--port", "0"}, args...)...)
	addr := regexp.MustCompile(`meshid dashboard on (http://127\.0\.0\.1:\d+)/`)
	var base string
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("meshid dashboard exited: %v\n%s", err, p.logs(t))
		default:
		}
		m := addr.FindStringSubmatch(p.logs(t))
		if m == nil {
			return fmt.Errorf("meshid dashboard has not printed its address yet")
		}
		base = m[1]
		return nil
	})
	return base
}
