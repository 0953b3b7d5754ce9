package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/rotation"
)

// readyStatus returns the HTTP status of a process's /ready.
func readyStatus(p *process) (int, string) {
	resp, err := http.Get("http://" + p.admin + "/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCADownLongerThanLeaf: the CA is gone for longer than a leaf lives.
// The proxy keeps its last certificate until it really expires, then
// reports not ready (and says why), and recovers by itself when the CA
// returns, without a restart.
func TestCADownLongerThanLeaf(t *testing.T) {
	t.Parallel()
	anchor := newAnchor(t, "fault anchor")
	ca := startCAWith(t, anchor, newIssuer(t, anchor, "fault issuer"), "--leaf-ttl", "20s", "--backdate", "1s")
	ns := namespace(t, "cadown")
	serviceAccount(t, ns, "web")
	web := startProxy(t, ca, ns, "web")

	if err := ca.stop(); err != nil {
		t.Fatal(err)
	}
	first := web.identity(t) // the certificate it holds when the CA goes
	// Until the leaf expires the proxy stays ready on its last certificate:
	// every check answered before NotAfter must say ready, and at least one
	// must have been, or the test proved nothing; every check asked after
	// it must end in "not ready, expired" (a check that straddles NotAfter
	// proves neither).
	var readyChecks int
	eventually(t, time.Minute, func() error {
		asked := time.Now()
		code, body := readyStatus(web.process)
		answered := time.Now()
		switch {
		case answered.Before(first.NotAfter):
			if code != http.StatusOK {
				t.Fatalf("not ready (%d %q) at %s, while its certificate is valid until %s", code, body, answered.Format(time.StampMilli), first.NotAfter.Format(time.StampMilli))
			}
			readyChecks++
			return errors.New("the certificate has not expired yet")
		case asked.Before(first.NotAfter):
			return errors.New("that check straddled the expiry")
		case readyChecks == 0:
			t.Fatalf("the first readiness check ended at %s, after the certificate expired (%s): too late to show it stays ready until then", answered.Format(time.StampMilli), first.NotAfter.Format(time.StampMilli))
		case code != http.StatusServiceUnavailable || !strings.Contains(body, "expired"):
			return fmt.Errorf("ready %d %q after the certificate expired at %s, want 503 saying it expired", code, body, first.NotAfter.Format(time.StampMilli))
		}
		return nil
	})
	t.Logf("ready at %d checks while the certificate was valid, not ready after it expired", readyChecks)
	if got := web.identity(t); got.Serial != first.Serial {
		t.Fatalf("the proxy's certificate changed (%s -> %s) while the CA was down", first.Serial, got.Serial)
	}

	// The CA comes back on the same address: the proxy recovers alone.
	unready := time.Now()
	runCAAt(t, ca.ns, ca.addr, "--leaf-ttl", "20s", "--backdate", "1s")
	back := time.Now()
	eventually(t, time.Minute, func() error {
		if code, body := readyStatus(web.process); code != http.StatusOK {
			return fmt.Errorf("ready %d %q after the CA returned", code, body)
		}
		return nil
	})
	t.Logf("kept its certificate until it expired at %s, was not ready, and was ready again %s after the CA returned (%s after it was seen not ready)",
		first.NotAfter.Format(time.TimeOnly), time.Since(back).Round(time.Millisecond), time.Since(unready).Round(time.Millisecond))
	if web.identity(t).Serial == first.Serial {
		t.Fatal("ready again without a new certificate")
	}
}

// TestAPIServerOutage: kube-apiserver stops for 60 s. Proxies that hold
// certificates keep serving traffic; a renewal that needs a TokenReview
// fails with UNAVAILABLE; a cached review keeps working; when the API
// server returns, everything recovers without a restart, the CA's watches
// included. Nothing crashes. (Not parallel: the API server is shared.)
func TestAPIServerOutage(t *testing.T) {
	e := need(t)
	ctx := context.Background()
	ca := startCA(t, "--token-cache-ttl", "5m")
	ns := namespace(t, "outage")
	for _, sa := range []string{"web", "db", "late"} {
		serviceAccount(t, ns, sa)
	}
	dbIn, webOut := freeAddr(t), freeAddr(t)
	db := startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated")
	web := startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn)
	cached := token(t, ns, "web", audience, nil)
	if _, err := rotation.Certify(ctx, ca.client, cached, time.Now()); err != nil { // reviewed and cached now
		t.Fatal(err)
	}
	uncached := token(t, ns, "late", audience, nil)
	nextIssuer := newIssuer(t, ca.anchor, "issuer after the outage")

	args := e.cluster.APIServerArgs()
	if err := e.cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			_ = e.cluster.StartAPIServer(ctx, args)
		}
	}()

	tr := startTraffic(webOut)
	_, err := rotation.Certify(ctx, ca.client, uncached, time.Now())
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("certify with an unreviewed token during the outage: %v, want UNAVAILABLE", err)
	}
	if _, err := rotation.Certify(ctx, ca.client, cached, time.Now()); err != nil {
		t.Fatalf("certify with a cached review during the outage: %v", err)
	}
	// The rest of the 60 s, with traffic flowing.
	select {
	case <-time.After(60*time.Second - time.Since(stopped)):
	case <-ca.exited:
		t.Fatal("meshid-ca exited during the outage")
	}
	if err := e.cluster.StartAPIServer(ctx, args); err != nil {
		t.Fatal(err)
	}
	restarted = true
	tr.end(t)

	for _, p := range []*process{ca.process, web.process, db.process} {
		select {
		case <-p.exited:
			t.Fatalf("%s exited during the outage", p.name)
		default:
		}
	}
	// Reviews work again, and so do the CA's watches.
	eventually(t, 30*time.Second, func() error {
		_, err := rotation.Certify(ctx, ca.client, uncached, time.Now())
		return err
	})
	updateSecret(t, ca.ns, issuerSecret(t, nextIssuer).Data)
	// The CA's watch retries with a backoff capped at 5 s (client-go's
	// default would wait up to a minute).
	recovered := time.Now()
	eventually(t, 30*time.Second, func() error {
		got, err := issuedBy(t, ca, cached)
		if err != nil {
			return err
		}
		if !got.Equal(nextIssuer.Cert) {
			return fmt.Errorf("the CA did not see the Secret updated after the outage")
		}
		return nil
	})
	t.Logf("the CA's Secret watch recovered %s after the API server returned", time.Since(recovered).Round(time.Second))
}

// TestCAReplicaKilled: one of two CA replicas is killed (SIGKILL) while
// ten proxies renew 20-second leaves; they fail over to the other replica
// and none is ever without a valid certificate.
func TestCAReplicaKilled(t *testing.T) {
	t.Parallel()
	anchor := newAnchor(t, "failover anchor")
	args := []string{"--leaf-ttl", "20s", "--backdate", "1s"}
	ca := startCAWith(t, anchor, newIssuer(t, anchor, "failover issuer"), args...)
	addr1, _ := runCA(t, ca.ns, args...)
	both := ca.addr + "," + addr1
	ns := namespace(t, "failover")
	var proxies []*meshProxy
	for i := range 10 {
		sa := fmt.Sprintf("w%d", i)
		serviceAccount(t, ns, sa)
		proxies = append(proxies, startProxyAt(t, ca, both, ns, sa))
	}
	before := map[*meshProxy]string{}
	for _, p := range proxies {
		before[p] = p.identity(t).Serial
	}

	if err := syscall.Kill(ca.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ca.exited
	// Two leaf lifetimes: every proxy must renew through the survivor, and
	// stay ready all along.
	deadline := time.Now().Add(40 * time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		for _, p := range proxies {
			if code, body := readyStatus(p.process); code != http.StatusOK {
				t.Fatalf("%s proxy not ready after the replica died: %d %s", p.sa, code, body)
			}
		}
		<-tick.C
	}
	var renewals, failed float64
	for _, p := range proxies {
		if p.identity(t).Serial == before[p] {
			t.Errorf("%s proxy never renewed after the replica died", p.sa)
		}
		renewals += p.metric(t, `meshid_proxy_renewals_total{result="ok"}`)
		failed += p.metric(t, `meshid_proxy_renewals_total{result="failed"}`)
	}
	t.Logf("%d proxies stayed ready for 40 s after the SIGKILL; %.0f renewals in all, %.0f attempts failed and were retried", len(proxies), renewals, failed)
}
