package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

// traffic sends requests to an app until stop is called, over kept-alive
// connections and over new connections, and counts failures and the
// connections it opened.
type traffic struct {
	ok, failed atomic.Int64
	dials      atomic.Int64 // connections opened
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startTraffic(webOut string) *traffic {
	return startTrafficAt(webOut, 4*time.Millisecond, 20*time.Millisecond)
}

// startTrafficAt is startTraffic with two kept-alive senders, one request
// every keptEvery each, and one sender on new connections every freshEvery.
func startTrafficAt(webOut string, keptEvery, freshEvery time.Duration) *traffic {
	return startTrafficVia(nil, webOut, "db", keptEvery, freshEvery)
}

// dialFunc opens a connection, as net.Dialer.DialContext does.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// startTrafficVia is startTrafficAt to the app called name at addr, its
// connections opened by dial (nil: from this machine's namespace).
func startTrafficVia(dial dialFunc, addr, name string, keptEvery, freshEvery time.Duration) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	counted := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			tr.dials.Add(1)
		}
		return c, err
	}
	kept := &http.Client{Transport: &http.Transport{DialContext: counted, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	unkept := &http.Client{Transport: &http.Transport{DialContext: counted, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	send := func(client *http.Client, every time.Duration) {
		defer tr.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			msg := fmt.Sprint(i)
			// The stand-in apps answer "hello from NAME: BODY", hello with a
			// newline.
			if got, err := get(client, addr, msg); err != nil || strings.TrimSuffix(got, "\n") != "hello from "+name+": "+msg {
				tr.failed.Add(1)
				tr.firstErr.CompareAndSwap(nil, fmt.Sprintf("%q, %v", got, err))
				continue
			}
			tr.ok.Add(1)
		}
	}
	tr.wg.Add(3)
	go send(kept, keptEvery)
	go send(kept, keptEvery)
	go send(unkept, freshEvery)
	return tr
}

func (tr *traffic) end(t *testing.T) {
	t.Helper()
	close(tr.stop)
	tr.wg.Wait()
	t.Logf("traffic: %d requests ok, %d failed", tr.ok.Load(), tr.failed.Load())
	if tr.failed.Load() > 0 {
		t.Errorf("%d requests failed; first: %v", tr.failed.Load(), tr.firstErr.Load())
	}
	if tr.ok.Load() < 100 {
		t.Errorf("only %d requests went through", tr.ok.Load())
	}
}

// TestRotateAnchor: a full rotation with two CA replicas and proxies under
// continuous traffic: zero failed requests, and at the end every leaf
// chains only to the new anchor and the old anchor is gone from every
// proxy's bundle.
func TestRotateAnchor(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms", "--replica", "ca-0")
	addr1, _ := runCA(t, ca.ns, "--fleet-report-interval", "500ms", "--replica", "ca-1")
	ns := namespace(t, "rotate")
	serviceAccount(t, ns, "web")
	serviceAccount(t, ns, "db")
	dbIn, webOut := freeAddr(t), freeAddr(t)
	db := startProxyAt(t, ca, ca.addr, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated")
	web := startProxyAt(t, ca, addr1, ns, "web", "--outbound", webOut+"="+dbIn)

	tr := startTraffic(webOut)
	out, code := rotateAnchor(t, ca)
	tr.end(t)
	t.Logf("rotate-anchor:\n%s", out)
	if code != 0 || !strings.Contains(out, "rotation done") {
		t.Fatalf("rotate-anchor start exited %d", code)
	}
	now := rotatedBundle(t, ca)
	for _, p := range []*meshProxy{web, db} {
		checkRotated(t, ca, now, p.sa, p.identity(t))
	}
	status, code := meshid(t, "", "rotate-anchor", "status", "-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig)
	if code != 0 || !hasLine(status, "Stage", "Done") {
		t.Fatalf("status after the rotation: exit %d\n%s", code, status)
	}
}

// rotateAnchor runs a full rotation of ca's anchor (a new one generated)
// with meshid rotate-anchor start and returns its output and exit code.
func rotateAnchor(t *testing.T, ca *caProcess) (string, int) {
	t.Helper()
	return meshid(t, "", "rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "-n", ca.ns, "--kubeconfig", need(t).cluster.Kubeconfig,
		"--stage-timeout", "2m", "--reissue-window", "2s")
}

// rotatedBundle is the bundle in ca's ConfigMap after a rotation: one
// anchor, not the old one.
func rotatedBundle(t *testing.T, ca *caProcess) *bundle.Bundle {
	t.Helper()
	cm, err := need(t).client.CoreV1().ConfigMaps(ca.ns).Get(context.Background(), "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now, err := bundle.Parse([]byte(cm.Data["ca-bundle.crt"]))
	if err != nil {
		t.Fatal(err)
	}
	if len(now.Anchors()) != 1 || now.Contains(ca.anchor.Cert) {
		t.Fatalf("the bundle still holds the old anchor (%d anchors)", len(now.Anchors()))
	}
	return now
}

// checkRotated fails t unless the proxy called name, whose /identity is
// id, holds the bundle now and a leaf that chains to it and not to ca's
// old anchor.
func checkRotated(t *testing.T, ca *caProcess, now *bundle.Bundle, name string, id identityDoc) {
	t.Helper()
	if id.BundleSHA256 != now.SHA256() {
		t.Errorf("%s proxy holds bundle %s, want the new-anchor bundle %s", name, id.BundleSHA256, now.SHA256())
	}
	chain, err := parsePEMChain(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(chain, now.X509Bundle(trustDomain)); err != nil {
		t.Errorf("%s proxy's leaf does not chain to the new anchor: %v", name, err)
	}
	if _, _, err := x509svid.Verify(chain, ca.bundle.X509Bundle(trustDomain)); err == nil {
		t.Errorf("%s proxy's leaf still chains to the old anchor", name)
	}
}

// pair is a CA with web -> db through two proxies, for rotation tests.
type pair struct {
	ca      *caProcess
	web, db *meshProxy
	webOut  string
	ns      string
}

// newPair starts the web and db proxies against ca in a new namespace
// named after prefix; db accepts any identity of the trust domain.
func newPair(t *testing.T, ca *caProcess, prefix string) *pair {
	t.Helper()
	p := &pair{ca: ca, ns: namespace(t, prefix)}
	serviceAccount(t, p.ns, "web")
	serviceAccount(t, p.ns, "db")
	dbIn := freeAddr(t)
	p.webOut = freeAddr(t)
	p.db = startProxy(t, ca, p.ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated")
	p.web = startProxy(t, ca, p.ns, "web", "--outbound", p.webOut+"="+dbIn)
	return p
}

// TestRotateAnchorResume: the rotation command is killed (SIGKILL) in the
// middle of every stage and resumed each time; it completes correctly, and
// traffic never fails.
func TestRotateAnchorResume(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms")
	webOut := newPair(t, ca, "resume").webOut
	common := []string{"-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig, "--stage-timeout", "2m"}

	tr := startTraffic(webOut)
	args := append([]string{"rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--reissue-window", "3s"}, common...)
	for _, stage := range []string{"Add", "SwitchIssuer", "Reissue", "Remove"} {
		killAt(t, "stage "+stage+":", args...)
		status, _ := meshid(t, "", append([]string{"rotate-anchor", "status"}, common...)...)
		if !hasLine(status, "Stage", stage) {
			t.Fatalf("after killing it in stage %s, status says:\n%s", stage, status)
		}
		args = append([]string{"rotate-anchor", "resume"}, common...)
	}
	out, code := meshid(t, "", args...)
	tr.end(t)
	if code != 0 || !strings.Contains(out, "rotation done") {
		t.Fatalf("final resume: exit %d\n%s", code, out)
	}
	if _, err := e.client.CoreV1().Secrets(ca.ns).Get(context.Background(), "meshid-rotation", metav1.GetOptions{}); err == nil {
		t.Fatal("the rotation's keys are still in the cluster after it finished")
	}
}

// killAt runs meshid with args, and SIGKILLs it as soon as its output has
// a line containing marker (it must get there).
func killAt(t *testing.T, marker string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(need(t).bin, "meshid"), args...)
	var buf syncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	eventually(t, 2*time.Minute, func() error {
		select {
		case err := <-exited:
			t.Fatalf("meshid %s ended (%v) before %q:\n%s", strings.Join(args, " "), err, marker, buf.String())
		default:
		}
		if !strings.Contains(buf.String(), marker) {
			return fmt.Errorf("no %q yet", marker)
		}
		return nil
	})
	_ = cmd.Process.Kill()
	<-exited
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRotateAnchorCertManager: the same rotation in --cert-manager mode,
// with cert-manager's real controller issuing the issuer.
func TestRotateAnchorCertManager(t *testing.T) {
	t.Parallel()
	e := need(t)
	const ns = "meshid-cm-rotate"
	startCertManager(t, ns)
	if out, code := meshid(t, "", "install", "--cert-manager", "--webhook=false", "-n", ns, "--apply", "--kubeconfig", e.cluster.Kubeconfig); code != 0 {
		t.Fatalf("install: %s", out)
	}
	ctx := context.Background()
	eventually(t, 30*time.Second, func() error {
		s, err := e.client.CoreV1().Secrets(ns).Get(ctx, "meshid-issuer", metav1.GetOptions{})
		if err != nil || len(s.Data["tls.crt"]) == 0 {
			return fmt.Errorf("cert-manager has not issued the issuer yet: %v", err)
		}
		return nil
	})
	cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := bundle.Parse([]byte(cm.Data["ca-bundle.crt"]))
	if err != nil {
		t.Fatal(err)
	}
	rendered, _ := meshid(t, "", "install", "--cert-manager", "--webhook=false", "-n", ns)
	addr, admin := freeAddr(t), freeAddr(t)
	startProcess(t, "meshid-ca", admin, append(deploymentArgs(t, rendered), "--kubeconfig", saKubeconfig(t, ns, "meshid-ca"),
		"--listen", addr, "--admin-listen", admin, "--replica", "cm-0", "--fleet-report-interval", "500ms")...)
	ca := &caProcess{ns: ns, addr: addr, bundle: old, anchor: &issuer.KeyPair{Cert: old.Anchors()[0]}}

	wns := namespace(t, "cmrotate")
	serviceAccount(t, wns, "web")
	serviceAccount(t, wns, "db")
	dbIn, webOut := freeAddr(t), freeAddr(t)
	startProxyPEM(t, ca, old.PEM(), wns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated")
	startProxyPEM(t, ca, old.PEM(), wns, "web", "--outbound", webOut+"="+dbIn)

	tr := startTraffic(webOut)
	out, code := meshid(t, "", "rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--cert-manager", "-n", ns, "--kubeconfig", e.cluster.Kubeconfig,
		"--stage-timeout", "2m", "--reissue-window", "2s")
	tr.end(t)
	if code != 0 || !strings.Contains(out, "rotation done") || !strings.Contains(out, "asking cert-manager to re-issue") {
		t.Fatalf("rotate-anchor --cert-manager: exit %d\n%s", code, out)
	}
	anchorSecret, err := e.client.CoreV1().Secrets(ns).Get(ctx, "meshid-anchor", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now, err := bundle.Parse(anchorSecret.Data["tls.crt"]); err != nil || now.Contains(old.Anchors()[0]) {
		t.Fatalf("cert-manager's anchor Secret still holds the old anchor (%v)", err)
	}
}

// TestRotateAnchorEmergency: the anchor expires and traffic breaks; the
// emergency rotation, which does not depend on the expired material,
// restores it without restarting a proxy.
func TestRotateAnchorEmergency(t *testing.T) {
	t.Parallel()
	e := need(t)
	now := time.Now()
	// An anchor that expires 20 s from now.
	anchor := issuertest.Anchor(t, issuertest.Name("short-lived anchor"), issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(time.Hour+20*time.Second))
	ca := startCAWith(t, anchor, newIssuer(t, anchor, "issuer of the short-lived anchor"), "--fleet-report-interval", "500ms")
	webOut := newPair(t, ca, "emergency").webOut
	if _, err := get(fresh, webOut, "before"); err != nil {
		t.Fatalf("traffic before the anchor expired: %v", err)
	}
	eventually(t, time.Minute, func() error {
		if _, err := get(fresh, webOut, "expired?"); err == nil {
			return fmt.Errorf("traffic still flows; the anchor expires at %s", anchor.Cert.NotAfter.Format(time.RFC3339))
		}
		return nil
	})

	out, code := meshid(t, "", "rotate-anchor", "start", "--emergency", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig,
		"--stage-timeout", "2m", "--reissue-window", "2s")
	if code != 0 || !strings.Contains(out, "rotation done") {
		t.Fatalf("rotate-anchor --emergency: exit %d\n%s", code, out)
	}
	eventually(t, 30*time.Second, func() error {
		got, err := get(fresh, webOut, "after")
		if err != nil || got != "hello from db: after" {
			return fmt.Errorf("traffic after the emergency rotation: %q, %v", got, err)
		}
		return nil
	})
}

// TestRotateAnchorHeldBack: a proxy cut off from the CA (frozen with
// SIGSTOP) holds the rotation at stage Add; the stage times out naming it,
// status names it, and once it is back, resume completes.
func TestRotateAnchorHeldBack(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms")
	pr := newPair(t, ca, "heldback")
	db, webOut := pr.db, pr.webOut
	dbID := "spiffe://cluster.local/ns/" + pr.ns + "/sa/db"
	common := []string{"-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig}
	// Wait until the CA has published both proxies.
	eventually(t, 30*time.Second, func() error {
		out, _ := meshid(t, "", append([]string{"rotate-anchor", "status", "-o", "json"}, common...)...)
		if strings.Count(out, `"instance"`) < 2 {
			return fmt.Errorf("the fleet does not show both proxies yet")
		}
		return nil
	})

	if err := syscall.Kill(db.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	out, code := meshid(t, "", append([]string{"rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--stage-timeout", "5s"}, common...)...)
	if code != 1 || !strings.Contains(out, "stage Add did not converge") || !strings.Contains(out, dbID) {
		t.Fatalf("rotation with a frozen proxy: exit %d\n%s", code, out)
	}
	status, _ := meshid(t, "", append([]string{"rotate-anchor", "status"}, common...)...)
	if !hasLine(status, "Stage", "Add") || !hasLine(status, "Lagging", dbID) {
		t.Fatalf("status does not name the proxy holding the rotation back:\n%s", status)
	}

	if err := syscall.Kill(db.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	tr := startTraffic(webOut)
	out, code = meshid(t, "", append([]string{"rotate-anchor", "resume", "--stage-timeout", "2m"}, common...)...)
	tr.end(t)
	if code != 0 || !strings.Contains(out, "rotation done") {
		t.Fatalf("resume after the proxy came back: exit %d\n%s", code, out)
	}
}

// TestRotateAnchorAbort: a rotation interrupted in stage Reissue is
// aborted: the old issuer is back, every leaf comes from it again, the
// bundle holds the old anchor alone, and traffic never fails.
func TestRotateAnchorAbort(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms")
	pr := newPair(t, ca, "abort")
	web, db, webOut := pr.web, pr.db, pr.webOut
	common := []string{"-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig, "--stage-timeout", "2m"}

	tr := startTraffic(webOut)
	killAt(t, "stage Reissue:", append([]string{"rotate-anchor", "start", "--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--reissue-window", "2s"}, common...)...)
	out, code := meshid(t, "", append([]string{"rotate-anchor", "abort"}, common...)...)
	tr.end(t)
	if code != 0 || !strings.Contains(out, "rotation aborted") {
		t.Fatalf("abort: exit %d\n%s", code, out)
	}
	for _, p := range []*meshProxy{web, db} {
		id := p.identity(t)
		if id.BundleSHA256 != ca.bundle.SHA256() {
			t.Errorf("%s proxy holds bundle %.12s, want the old bundle %.12s", p.sa, id.BundleSHA256, ca.bundle.SHA256())
		}
		chain, err := parsePEMChain(id)
		if err != nil {
			t.Fatal(err)
		}
		if !chain[1].Equal(ca.issuer.Cert) {
			t.Errorf("%s proxy's leaf comes from %s, want the old issuer back", p.sa, chain[1].Subject)
		}
	}
	status, _ := meshid(t, "", append([]string{"rotate-anchor", "status"}, common...)...)
	if !hasLine(status, "Stage", "Aborted") {
		t.Fatalf("status after abort:\n%s", status)
	}
}
