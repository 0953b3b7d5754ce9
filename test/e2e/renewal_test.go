package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestRenewalUnderTraffic: with a 2-minute leaf TTL, requests over one
// kept-alive connection and over new connections flow across renewals of
// both proxies with zero failures, and every renewal uses a new key.
func TestRenewalUnderTraffic(t *testing.T) {
	t.Parallel()
	ca := startCA(t, "--leaf-ttl", "2m")
	ns := namespace(t, "renew")
	serviceAccount(t, ns, "web")
	serviceAccount(t, ns, "db")
	dbIn, webOut := freeAddr(t), freeAddr(t)
	db := startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated")
	socket := filepath.Join(t.TempDir(), "workload.sock")
	web := startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn, "--workload-api", "unix://"+socket)

	// A go-spiffe X509Source follows the Workload API across renewals.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	firstSVID, err := source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}

	kept := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	var (
		ok, failed atomic.Int64
		firstErr   atomic.Value
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	send := func(client *http.Client, every time.Duration) {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			msg := fmt.Sprint(i)
			if got, err := get(client, webOut, msg); err != nil || got != "hello from db: "+msg {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("%q, %v", got, err))
				continue
			}
			ok.Add(1)
		}
	}
	wg.Add(2)
	go send(kept, 20*time.Millisecond)
	go send(fresh, 100*time.Millisecond)

	// Follow both proxies' keys until each has renewed twice.
	keys := map[*meshProxy][]string{}
	eventually(t, 5*time.Minute, func() error {
		pending := 0
		for _, p := range []*meshProxy{web, db} {
			k := p.identity(t).PublicKeySHA256
			if ks := keys[p]; len(ks) == 0 || ks[len(ks)-1] != k {
				keys[p] = append(ks, k)
			}
			if len(keys[p]) < 3 {
				pending++
			}
		}
		if pending > 0 {
			return fmt.Errorf("renewals so far: web %d, db %d", len(keys[web])-1, len(keys[db])-1)
		}
		return nil
	})
	close(stop)
	wg.Wait()

	for p, ks := range keys {
		seen := map[string]bool{}
		for _, k := range ks {
			if seen[k] {
				t.Errorf("%s proxy reused key %s across renewals", p.sa, k)
			}
			seen[k] = true
		}
	}
	t.Logf("%d requests ok, %d failed, across %d web and %d db renewals", ok.Load(), failed.Load(), len(keys[web])-1, len(keys[db])-1)
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed during renewals; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 1000 {
		t.Fatalf("only %d requests went through", ok.Load())
	}
	if v := web.metric(t, `meshid_proxy_renewals_total{result="ok"}`); v < 3 {
		t.Fatalf("web renewals_total{ok} = %v, want >= 3", v)
	}
	eventually(t, 10*time.Second, func() error {
		svid, err := source.GetX509SVID()
		if err != nil {
			return err
		}
		if got, want := svid.Certificates[0].SerialNumber.Text(16), web.identity(t).Serial; got != want || svid.Certificates[0].Equal(firstSVID.Certificates[0]) {
			return fmt.Errorf("the Workload API client holds serial %s, the proxy %s", got, want)
		}
		return nil
	})
}
