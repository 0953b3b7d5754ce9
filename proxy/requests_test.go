package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/rotation"
)

var reqTD = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// requestWorld is a proxy with three inbound ports (HTTP app with rules,
// gRPC app with rules, a byte pipe), real apps behind them and
// certificates for its callers.
type requestWorld struct {
	p                    *Proxy
	anchor               *issuer.KeyPair
	bundle               *x509bundle.Bundle
	server               spiffeid.ID
	httpIn, grpcIn, pipe string
	health               *health.Server
}

// httpApp answers with what it saw: protocol, method, path.
func httpApp(t testing.TB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "app: %s %s %s", r.Proto, r.Method, r.URL.EscapedPath())
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

func newRequestWorld(t testing.TB, opts ...func(*Config)) *requestWorld {
	t.Helper()
	w := &requestWorld{anchor: issuertest.Anchor(t), server: spiffeid.RequireFromPath(reqTD, "/ns/shop/sa/db")}
	w.bundle = x509bundle.FromX509Authorities(reqTD, []*x509.Certificate{w.anchor.Cert})

	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	w.health = health.NewServer()
	healthgrpc.RegisterHealthServer(gs, w.health)
	go func() { _ = gs.Serve(grpcLis) }()
	t.Cleanup(gs.Stop)

	cfg := Config{
		TrustDomain: reqTD, CA: "127.0.0.1:1", CAID: spiffeid.RequireFromPath(reqTD, "/ns/meshid/sa/meshid-ca"),
		TokenFile: "unused", BundleFile: "unused",
		Inbound: []Inbound{{Listen: "127.0.0.1:0", App: httpApp(t)}, {Listen: "127.0.0.1:0", App: grpcLis.Addr().String()}, {Listen: "127.0.0.1:0", App: httpApp(t)}},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.p = p
	b, err := bundle.New(w.anchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	p.store.SetBundle(b)
	p.store.SetSVID(w.issued(t, w.server))
	ls, err := p.listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, l := range ls {
		go func() { _ = l.serve(ctx) }()
	}
	w.httpIn, w.grpcIn, w.pipe = ls[0].lis.Addr().String(), ls[1].lis.Addr().String(), ls[2].lis.Addr().String()
	w.setPolicy(t, "enforce", "")
	return w
}

func (w *requestWorld) issued(t testing.TB, id spiffeid.ID) *rotation.Issued {
	leaf := issuertest.Leaf(t, w.anchor, id)
	return &rotation.Issued{SVID: &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{leaf.Cert}, leaf.Chain...), PrivateKey: leaf.Key}}
}

// setPolicy installs the test's policy, with the HTTP port's rules in
// mode and extra appended to its matches.
func (w *requestWorld) setPolicy(t testing.TB, mode, extra string) {
	t.Helper()
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	yaml := fmt.Sprintf(`
ports:
- port: %s
  allow: [{namespace: shop}, {namespace: billing}]
  requests:
  - policy: shop/db
    name: web-reads
    mode: %s
    from: [{serviceAccount: shop/web}]
    matches:
    - {method: GET, path: {value: /api}}%s
- port: %s
  allow: [{namespace: shop}]
  requests:
  - policy: shop/health
    name: health
    from: [{serviceAccount: shop/web}]
    matches:
    - grpc: {service: grpc.health.v1.Health, method: Check}
    - grpc: {service: grpc.health.v1.Health, method: Watch}
- port: %s
  allow: [{namespace: shop}]
`, port(w.httpIn), mode, extra, port(w.grpcIn), port(w.pipe))
	if err := w.p.setPolicyFrom("test", []byte(yaml)); err != nil {
		t.Fatal(err)
	}
}

// client is the mTLS configuration of a caller, with go-spiffe's own
// server check, offering protos in ALPN.
func (w *requestWorld) client(t testing.TB, caller string, protos ...string) *tls.Config {
	i := w.issued(t, spiffeid.RequireFromPath(reqTD, caller))
	cfg := tlsconfig.MTLSClientConfig(i.SVID, w.bundle, tlsconfig.AuthorizeID(w.server))
	cfg.NextProtos = protos
	return cfg
}

func (w *requestWorld) inboundConnections() float64 {
	return testutil.ToFloat64(w.p.metrics.connections.WithLabelValues("inbound"))
}

func (w *requestWorld) denied(policy, rule, reason string) float64 {
	return testutil.ToFloat64(w.p.metrics.requestsDenied.WithLabelValues(policy, rule, reason))
}

// h2Client is an HTTP/2-only client transport over TLS with cfg.
func h2Client(cfg *tls.Config) *http.Transport {
	var h2 http.Protocols
	h2.SetHTTP2(true)
	return &http.Transport{Protocols: &h2, TLSClientConfig: cfg}
}

// exchange sends one raw HTTP/1.1 request on c and reads the answer.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, method, path string, header ...string) (int, string) {
	t.Helper()
	req := method + " " + path + " HTTP/1.1\r\nHost: db.shop\r\n" + strings.Join(header, "") + "\r\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// TestRequestRulesHTTP1: over one kept-alive HTTP/1.1 connection (mTLS,
// ALPN http/1.1), an allowed GET reaches the app, a DELETE is 403 with the
// rule and reason, path tricks are normalised before the rules (and the
// app sees the normal path) or refused with 400, an oversized header is
// 431, and every refusal leaves the connection usable; then a policy
// change allows DELETE on the same connection's next request.
func TestRequestRulesHTTP1(t *testing.T) {
	w := newRequestWorld(t)
	c, err := tls.Dial("tcp", w.httpIn, w.client(t, "/ns/shop/sa/web", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Fatalf("ALPN = %q, want http/1.1", got)
	}
	br := bufio.NewReader(c)
	tests := []struct {
		method, path string
		header       []string
		status       int
		says         string
	}{
		{"GET", "/api/orders", nil, 200, "app: HTTP/1.1 GET /api/orders"},
		{"DELETE", "/api/orders/1", nil, 403, "denied by shop/db rule web-reads (method_not_allowed)"},
		{"GET", "/admin", nil, 403, "path_not_allowed"},
		{"GET", "/api/../admin", nil, 403, "path_not_allowed"},
		{"GET", "/api/%2e%2e/admin", nil, 403, "path_not_allowed"},
		{"GET", "/API/orders", nil, 403, "path_not_allowed"},
		{"GET", "/apix", nil, 403, "path_not_allowed"},
		{"GET", "//api//orders/./x", nil, 200, "app: HTTP/1.1 GET /api/orders/x"},
		{"GET", "/api/%6frders", nil, 200, "app: HTTP/1.1 GET /api/orders"},
		{"GET", "/api/a%2fb", nil, 400, "encoded slash"},
		{"GET", "/api/x", []string{"X-Big: " + strings.Repeat("a", maxHeaderBytes+8<<10) + "\r\n"}, 431, ""},
	}
	for _, tt := range tests {
		status, body := exchange(t, c, br, tt.method, tt.path, tt.header...)
		if status != tt.status || !strings.Contains(body, tt.says) {
			t.Errorf("%s %s = %d %q; want %d saying %q", tt.method, tt.path, status, body, tt.status, tt.says)
		}
		if status == 431 { // net/http closes after 431: a new connection for the rest
			break
		}
	}
	if got := w.denied("shop/db", "web-reads", "method_not_allowed"); got != 1 {
		t.Errorf("meshid_proxy_requests_denied_total{shop/db,web-reads,method_not_allowed} = %v, want 1", got)
	}
	if got := w.denied("", "", policy.ReasonInvalidPath); got != 1 {
		t.Errorf("invalid_path denials = %v, want 1", got)
	}

	// A policy change reaches the kept-alive connection at its next request.
	c2, err := tls.Dial("tcp", w.httpIn, w.client(t, "/ns/shop/sa/web", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	br2 := bufio.NewReader(c2)
	if status, _ := exchange(t, c2, br2, "DELETE", "/api/orders/1"); status != 403 {
		t.Fatalf("DELETE before the change = %d, want 403", status)
	}
	conns := w.inboundConnections()
	w.setPolicy(t, "enforce", "\n    - {method: DELETE, path: {value: /api/orders}}")
	if status, body := exchange(t, c2, br2, "DELETE", "/api/orders/1"); status != 200 || body != "app: HTTP/1.1 DELETE /api/orders/1" {
		t.Fatalf("DELETE after the change = %d %q, want 200 from the app", status, body)
	}
	if got := w.inboundConnections(); got != conns {
		t.Fatalf("the request after the change came on a new connection (%v -> %v)", conns, got)
	}

	// A caller the port admits but no request rule names.
	c3, err := tls.Dial("tcp", w.httpIn, w.client(t, "/ns/billing/sa/refunder", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if status, body := exchange(t, c3, bufio.NewReader(c3), "GET", "/api/orders"); status != 403 || !strings.Contains(body, "no request rule of shop/db names the caller (peer_not_named)") {
		t.Fatalf("billing GET = %d %q, want 403 peer_not_named", status, body)
	}
}

// TestRequestRulesHTTP2: the same rules over HTTP/2 (ALPN h2, net/http's
// client through x/net/http2), on one connection, reaching the app as
// h2c; and audit mode lets the DELETE through, counts it as audited and
// not as denied.
func TestRequestRulesHTTP2(t *testing.T) {
	w := newRequestWorld(t)
	client := &http.Client{Timeout: 10 * time.Second, Transport: h2Client(w.client(t, "/ns/shop/sa/web", "h2"))}
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "https://"+w.httpIn+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, body := do("GET", "/api/orders"); status != 200 || body != "app: HTTP/2.0 GET /api/orders" {
		t.Fatalf("GET = %d %q", status, body)
	}
	if status, body := do("DELETE", "/api/orders/1"); status != 403 || !strings.Contains(body, "method_not_allowed") {
		t.Fatalf("DELETE = %d %q", status, body)
	}
	if status, _ := do("GET", "/api/orders/2"); status != 200 {
		t.Fatalf("GET after a denial = %d", status)
	}
	w.setPolicy(t, "audit", "")
	if status, body := do("DELETE", "/api/orders/1"); status != 200 || body != "app: HTTP/2.0 DELETE /api/orders/1" {
		t.Fatalf("DELETE in audit mode = %d %q, want the app's answer", status, body)
	}
	if got := testutil.ToFloat64(w.p.metrics.requestsAudited.WithLabelValues("shop/db", "web-reads", "method_not_allowed")); got != 1 {
		t.Fatalf("audited = %v, want 1", got)
	}
	if got := w.denied("shop/db", "web-reads", "method_not_allowed"); got != 1 {
		t.Fatalf("denied = %v, want 1 (the enforced one only)", got)
	}
	if got := w.inboundConnections(); got != 1 {
		t.Fatalf("%v inbound connections, want 1 (HTTP/2 multiplexes)", got)
	}

	// The byte-pipe port negotiates no HTTP protocol.
	c, err := tls.Dial("tcp", w.pipe, w.client(t, "/ns/shop/sa/web", "h2", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().NegotiatedProtocol; got != "" {
		t.Fatalf("the byte-pipe port negotiated %q", got)
	}
}

// TestRequestRulesGRPC: a grpc-go client through the proxy to a grpc-go
// server: an allowed unary call, a denied one (PERMISSION_DENIED, the
// connection still usable), and a server-streaming call whose messages
// pass one by one.
func TestRequestRulesGRPC(t *testing.T) {
	w := newRequestWorld(t)
	conn, err := grpc.NewClient(w.grpcIn, grpc.WithTransportCredentials(credentials.NewTLS(w.client(t, "/ns/shop/sa/web"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthgrpc.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil || resp.Status != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v", resp, err)
	}
	_, err = hc.List(ctx, &healthgrpc.HealthListRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "rule health (grpc_method_not_allowed)") {
		t.Fatalf("List = %v, want PERMISSION_DENIED naming rule health", err)
	}
	w.health.SetServingStatus("db", healthgrpc.HealthCheckResponse_SERVING)
	stream, err := hc.Watch(ctx, &healthgrpc.HealthCheckRequest{Service: "db"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []healthgrpc.HealthCheckResponse_ServingStatus{healthgrpc.HealthCheckResponse_SERVING, healthgrpc.HealthCheckResponse_NOT_SERVING} {
		msg, err := stream.Recv()
		if err != nil || msg.Status != want {
			t.Fatalf("Watch: %v, %v; want %v", msg, err, want)
		}
		w.health.SetServingStatus("db", healthgrpc.HealthCheckResponse_NOT_SERVING)
	}
	if _, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check after a denial and a stream: %v", err)
	}
	if got := w.inboundConnections(); got != 1 {
		t.Fatalf("%v inbound connections, want 1", got)
	}
}

// TestRequestRulesInsideMeshidALPN: what an outbound meshid-proxy sends
// (ALPN meshid/1, then the app's own bytes) is told apart by the HTTP/2
// preface: h2c with prior knowledge reaches the app as HTTP/2, anything
// else is HTTP/1.1; the rules apply to both.
func TestRequestRulesInsideMeshidALPN(t *testing.T) {
	w := newRequestWorld(t)
	cfg := w.client(t, "/ns/shop/sa/web", ALPN)
	// The transports believe they speak in plain (http://): the dialer
	// wraps their bytes in meshid/1 mTLS, as an outbound proxy does.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		if err == nil && c.(*tls.Conn).ConnectionState().NegotiatedProtocol != ALPN {
			t.Errorf("ALPN = %q, want %s", c.(*tls.Conn).ConnectionState().NegotiatedProtocol, ALPN)
		}
		return c, err
	}
	var h2cOnly http.Protocols
	h2cOnly.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &h2cOnly, DialContext: dial}}
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial}}
	for _, tt := range []struct {
		name   string
		client *http.Client
		proto  string
	}{{"h2c", h2c, "HTTP/2.0"}, {"http/1.1", h1, "HTTP/1.1"}} {
		for _, c := range []struct {
			method string
			status int
		}{{"GET", 200}, {"DELETE", 403}} {
			req, _ := http.NewRequest(c.method, "http://"+w.httpIn+"/api/x", nil)
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.name, c.method, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || c.status == 200 && string(body) != "app: "+tt.proto+" GET /api/x" {
				t.Fatalf("%s %s = %d %q", tt.name, c.method, resp.StatusCode, body)
			}
		}
	}
}

// TestRequestRulesHTTP2Limits: a header list over the limit is refused,
// and a burst of 4,000 streams opened and reset at once (rapid reset)
// either ends the connection with GOAWAY ENHANCE_YOUR_CALM (more than 4 x
// maxStreams handlers queued) or is kept up with (the PING after it is
// answered); either way the proxy goes on serving new connections.
func TestRequestRulesHTTP2Limits(t *testing.T) {
	w := newRequestWorld(t)
	client := &http.Client{Timeout: 10 * time.Second, Transport: h2Client(w.client(t, "/ns/shop/sa/web", "h2"))}
	req, _ := http.NewRequest("GET", "https://"+w.httpIn+"/api/x", nil)
	req.Header.Set("X-Big", strings.Repeat("a", maxHeaderBytes+8<<10))
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized header = %d, want 431 or a refused stream", resp.StatusCode)
		}
	}

	c, err := tls.Dial("tcp", w.httpIn, w.client(t, "/ns/shop/sa/web", "h2"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	go func() {
		for i := uint32(1); i < 2*4*maxStreams*10; i += 2 {
			// A minimal HEADERS block: :method GET, :scheme https, :path /api, :authority db (HPACK static and literal).
			block := []byte{0x82, 0x87, 0x04, 0x04, '/', 'a', 'p', 'i', 0x41, 0x02, 'd', 'b'}
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil {
				return
			}
			if fr.WriteRSTStream(i, http2.ErrCodeCancel) != nil {
				return
			}
		}
		_ = fr.WritePing(false, [8]byte{'d', 'o', 'n', 'e'})
	}()
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no answer to 4,000 reset streams and a PING within 20 s")
		}
		if ping, ok := f.(*http2.PingFrame); ok && ping.IsAck() {
			t.Log("the handlers kept up with the resets: the connection answered the PING after the burst")
			break
		}
		if err != nil {
			t.Logf("connection closed: %v", err)
			break
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	// The proxy still serves.
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: h2Client(w.client(t, "/ns/shop/sa/web", "h2"))}
	resp, err := fresh.Get("https://" + w.httpIn + "/api/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the burst: %d", resp.StatusCode)
	}
}

// TestRequestRulesCloseBytePipes: a connection piped to a port before it
// had request rules is closed when rules arrive (it could not be held to
// them); a new one is parsed and decided.
func TestRequestRulesCloseBytePipes(t *testing.T) {
	w := newRequestWorld(t)
	c, err := tls.Dial("tcp", w.pipe, w.client(t, "/ns/shop/sa/web", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if status, body := exchange(t, c, br, "DELETE", "/x"); status != 200 || body != "app: HTTP/1.1 DELETE /x" {
		t.Fatalf("through the byte pipe: %d %q", status, body)
	}
	_, port, _ := net.SplitHostPort(w.pipe)
	if err := w.p.setPolicyFrom("test", []byte("ports:\n- port: "+port+"\n  allow: [{namespace: shop}]\n  requests:\n  - name: reads\n    matches: [{method: GET}]\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "DELETE /x HTTP/1.1\r\nHost: db\r\n\r\n"); err == nil {
		if resp, err := http.ReadResponse(br, nil); err == nil {
			t.Fatalf("the byte pipe survived the new rules: %s", resp.Status)
		}
	}
	c2, err := tls.Dial("tcp", w.pipe, w.client(t, "/ns/shop/sa/web", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if status, body := exchange(t, c2, bufio.NewReader(c2), "DELETE", "/x"); status != 403 || !strings.Contains(body, "rule reads (method_not_allowed)") {
		t.Fatalf("a new connection: %d %q", status, body)
	}
}

// BenchmarkRequestLayer: one HTTP/1.1 request at a time over a kept-alive
// mTLS connection, through a byte-pipe port and through a port with 20
// request rules (the request allowed by the last): what the HTTP layer
// adds per request, in time and allocations, on this machine.
func BenchmarkRequestLayer(b *testing.B) {
	for _, tt := range []struct{ name, port string }{{"pipe", "pipe"}, {"20-rules", "rules"}} {
		b.Run(tt.name, func(b *testing.B) {
			w := newRequestWorld(b)
			addr := w.pipe
			if tt.port == "rules" {
				addr = w.httpIn
				var rules strings.Builder
				for i := range 19 {
					fmt.Fprintf(&rules, "  - name: r%d\n    from: [{serviceAccount: shop/web}]\n    hosts: [api.shop]\n    matches: [{method: GET, path: {value: /v%d}}]\n", i, i)
				}
				_, port, _ := net.SplitHostPort(addr)
				yaml := "ports:\n- port: " + port + "\n  allow: [{namespace: shop}]\n  requests:\n" + rules.String() +
					"  - name: last\n    from: [{namespace: shop}]\n    matches: [{method: GET, path: {type: Exact, value: /api/orders}}]\n"
				if err := w.p.setPolicyFrom("bench", []byte(yaml)); err != nil {
					b.Fatal(err)
				}
			}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: w.client(b, "/ns/shop/sa/web", "http/1.1"), MaxConnsPerHost: 1}}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get("https://" + addr + "/api/orders")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}

// denialLog hands over the message of every record.
type denialLog struct{ msgs chan string }

func (h denialLog) Enabled(context.Context, slog.Level) bool { return true }
func (h denialLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h denialLog) WithGroup(string) slog.Handler            { return h }
func (h denialLog) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "request ") {
		h.msgs <- r.Message
	}
	return nil
}

// TestRequestDenialsLoggedOncePerInterval: every denial is counted, but
// one (peer, policy, rule) is logged once per denialLogEvery on the
// proxy's clock; an audited request is logged apart from denials.
func TestRequestDenialsLoggedOncePerInterval(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Now()) // the certificates are valid from now
	logs := denialLog{msgs: make(chan string, 100)}
	w := newRequestWorld(t, func(c *Config) { c.Clock, c.Log = clock, slog.New(logs) })
	c, err := tls.Dial("tcp", w.httpIn, w.client(t, "/ns/shop/sa/web", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range 5 {
		if status, _ := exchange(t, c, br, "DELETE", "/api/x"); status != 403 {
			t.Fatalf("DELETE = %d", status)
		}
	}
	clock.Step(denialLogEvery)
	if status, _ := exchange(t, c, br, "DELETE", "/api/x"); status != 403 {
		t.Fatalf("DELETE = %d", status)
	}
	w.setPolicy(t, "audit", "")
	for range 3 {
		if status, _ := exchange(t, c, br, "DELETE", "/api/x"); status != 200 {
			t.Fatalf("DELETE in audit mode = %d", status)
		}
	}
	close(logs.msgs)
	var got []string
	for m := range logs.msgs {
		got = append(got, m)
	}
	want := []string{"request denied", "request denied", "request allowed in audit mode; enforce would deny it"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logged %q, want %q", got, want)
	}
	if v := w.denied("shop/db", "web-reads", "method_not_allowed"); v != 6 {
		t.Fatalf("%v denials counted, want 6", v)
	}
}
