package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
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
	// Until the leaf expires the proxy stays ready on its last certificate.
	if code, body := readyStatus(web.process); code != http.StatusOK && time.Now().Before(first.NotAfter) {
		t.Fatalf("not ready (%d %s) while its certificate is still valid", code, body)
	}
	eventually(t, time.Minute, func() error {
		code, body := readyStatus(web.process)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "expired") {
			return fmt.Errorf("ready %d %q, want 503 saying the certificate expired", code, body)
		}
		return nil
	})
	if got := web.identity(t); got.Serial != first.Serial {
		t.Fatalf("the proxy's certificate changed (%s -> %s) while the CA was down", first.Serial, got.Serial)
	}

	// The CA comes back on the same address: the proxy recovers alone.
	runCAAt(t, ca.ns, ca.addr, "--leaf-ttl", "20s", "--backdate", "1s")
	eventually(t, time.Minute, func() error {
		if code, body := readyStatus(web.process); code != http.StatusOK {
			return fmt.Errorf("ready %d %q after the CA returned", code, body)
		}
		return nil
	})
	if web.identity(t).Serial == first.Serial {
		t.Fatal("ready again without a new certificate")
	}
}
