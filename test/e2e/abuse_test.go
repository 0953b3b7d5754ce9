package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
)

// clientFrom dials the CA from the loopback address ip (127.0.0.0/8 is all
// ours), so that the CA sees a caller of its own.
func clientFrom(t *testing.T, ca *caProcess, ip string) identityv1.IdentityClient {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient("passthrough:///"+ca.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(ca.bundle.X509Bundle(trustDomain), tlsconfig.AuthorizeID(ca.id(t))))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return identityv1.NewIdentityClient(conn)
}

// TestCallerLimits: one client opens 40 connections and asks for 2,000
// bundle streams. It gets its limit of streams and connections and no
// more, each refusal counted; the CA's memory stays bounded; and another
// client, meanwhile, certifies and watches as usual.
func TestCallerLimits(t *testing.T) {
	t.Parallel()
	const maxStreams, maxConns, conns, attempts = 20, 30, 40, 2000
	ca := startCA(t, "--max-streams-per-caller", fmt.Sprint(maxStreams), "--max-connections-per-caller", fmt.Sprint(maxConns))
	ns := namespace(t, "limits")
	serviceAccount(t, ns, "good")
	goodToken := token(t, ns, "good", audience, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var abusive []identityv1.IdentityClient
	for range conns {
		abusive = append(abusive, clientFrom(t, ca, "127.0.0.1"))
	}
	var open, exhausted, unavailable atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	for i := range attempts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			stream, err := abusive[i%conns].WatchBundle(sctx, &identityv1.WatchBundleRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			switch status.Code(err) {
			case codes.OK:
				open.Add(1)
				go func() { <-ctx.Done(); scancel() }() // held until the test ends
				return
			case codes.ResourceExhausted:
				exhausted.Add(1)
			default:
				unavailable.Add(1) // on a connection the CA closed
			}
			scancel()
		}()
	}
	wg.Wait()
	t.Logf("%d stream attempts over %d connections: %d open, %d refused (RESOURCE_EXHAUSTED), %d on refused connections",
		attempts, conns, open.Load(), exhausted.Load(), unavailable.Load())
	if open.Load() != maxStreams {
		t.Errorf("%d streams open for one caller, want exactly its limit %d", open.Load(), maxStreams)
	}
	if exhausted.Load() == 0 {
		t.Error("no stream was refused with RESOURCE_EXHAUSTED")
	}

	// Another caller is unaffected.
	good := clientFrom(t, ca, "127.0.0.2")
	start := time.Now()
	if _, err := rotation.Certify(ctx, good, goodToken, time.Now()); err != nil {
		t.Fatalf("another caller could not certify: %v", err)
	}
	stream, err := good.WatchBundle(ctx, &identityv1.WatchBundleRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		t.Fatalf("another caller could not watch the bundle: %v", err)
	}
	t.Logf("the other caller certified and got its bundle in %s", time.Since(start).Round(time.Millisecond))

	if v := ca.metric(t, `meshid_ca_caller_limited_total{kind="streams"}`); v < float64(exhausted.Load()) {
		t.Errorf("caller_limited_total{streams} = %v, want >= %d", v, exhausted.Load())
	}
	if v := ca.metric(t, `meshid_ca_caller_limited_total{kind="connections"}`); v < conns-maxConns {
		t.Errorf("caller_limited_total{connections} = %v, want >= %d", v, conns-maxConns)
	}
	rss := ca.metric(t, "process_resident_memory_bytes") / (1 << 20)
	t.Logf("CA RSS %.1f MiB, goroutines %.0f", rss, ca.metric(t, "go_goroutines"))
	if rss > 200 {
		t.Errorf("CA RSS %.1f MiB under the stream flood, want < 200", rss)
	}
}

// slowloris opens n connections to addr from ip, sends the first bytes of
// a TLS record and nothing more, and returns a channel that yields once for
// each connection the server closes.
func slowloris(t *testing.T, ip, addr string, n int) <-chan time.Time {
	t.Helper()
	closed := make(chan time.Time, n)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02}); err != nil {
			closed <- time.Now() // already closed by a per-caller limit
			continue
		}
		go func() {
			_, err := io.Copy(io.Discard, c)
			if err == nil || !errors.Is(err, net.ErrClosed) {
				closed <- time.Now()
			}
		}()
	}
	return closed
}

// waitClosed waits until all n connections are closed by the server, for at
// most limit, and returns how long the last took.
func waitClosed(t *testing.T, closed <-chan time.Time, n int, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	var last time.Time
	timeout := time.After(limit)
	for i := range n {
		select {
		case last = <-closed:
		case <-timeout:
			t.Fatalf("%d of %d stalled connections still open after %s", n-i, n, limit)
		}
	}
	return last.Sub(start)
}

// TestSlowloris: hundreds of connections that start a TLS handshake and
// stall, on the CA and on a proxy's inbound port, are closed by the
// handshake timeout, and meanwhile other clients are served as usual.
func TestSlowloris(t *testing.T) {
	t.Parallel()
	const n = 300
	ca := startCA(t)
	ns := namespace(t, "slow")
	serviceAccount(t, ns, "web")
	serviceAccount(t, ns, "db")
	dbIn, webOut := freeAddr(t), freeAddr(t)
	startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--default-mode", "cluster-authenticated", "--handshake-timeout", "3s")
	startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn)
	tok := token(t, ns, "web", audience, nil)

	start := time.Now()
	onCA := slowloris(t, "127.0.0.3", ca.addr, n)
	onProxy := slowloris(t, "127.0.0.3", dbIn, n)

	// Others are served while the stalled connections are open.
	good := clientFrom(t, ca, "127.0.0.4")
	if _, err := rotation.Certify(context.Background(), good, tok, time.Now()); err != nil {
		t.Fatalf("certify during the slowloris: %v", err)
	}
	for i := range 20 {
		if got, err := get(fresh, webOut, fmt.Sprint(i)); err != nil || got != "hello from db: "+fmt.Sprint(i) {
			t.Fatalf("request %d through the proxies during the slowloris: %q, %v", i, got, err)
		}
	}
	t.Logf("certify and 20 requests through the proxies went through in %s", time.Since(start).Round(time.Millisecond))

	// The CA closes stalled handshakes after 10 s (more than 64 from one
	// caller at once at the start); the proxy after its --handshake-timeout.
	t.Logf("all %d stalled connections to the proxy closed after %s", n, waitClosed(t, onProxy, n, start, 20*time.Second).Round(time.Millisecond))
	t.Logf("all %d stalled connections to the CA closed after %s", n, waitClosed(t, onCA, n, start, 30*time.Second).Round(time.Millisecond))
}
