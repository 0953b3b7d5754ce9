package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/meshid/meshid/policy"
)

// Limits of the HTTP layer on ports with request rules (docs/policy.md).
const (
	// maxHeaderBytes bounds a request's header: HTTP/1.1's request line
	// and header lines, HTTP/2's decoded header list
	// (SETTINGS_MAX_HEADER_LIST_SIZE). Over it: 431, or the stream reset.
	maxHeaderBytes = 64 << 10
	// maxStreams is SETTINGS_MAX_CONCURRENT_STREAMS. x/net/http2 runs at
	// most this many handlers per connection, and ends a connection that
	// queues more than 4 x this many (rapid reset: GOAWAY
	// ENHANCE_YOUR_CALM).
	maxStreams = 100
	// denialLogEvery is how often one (peer, policy, rule) denial or audit
	// is logged; every one is counted.
	denialLogEvery = time.Minute
	// maxLogKeys bounds the (peer, policy, rule) pairs remembered for
	// denialLogEvery; past it, the memory starts again.
	maxLogKeys = 4096
)

// requestLayer is what the proxy shares between the connections it
// parses as HTTP: the transports to the apps and the log throttle. Its
// zero value is ready.
type requestLayer struct {
	once   sync.Once
	h1, h2 http.RoundTripper

	mu     sync.Mutex
	logged map[logKey]time.Time
	pipes  map[int]map[net.Conn]struct{} // byte-pipe connections of the explicit inbound ports
}

type logKey struct {
	peer         spiffeid.ID
	policy, rule string
	audited      bool
}

func (l *requestLayer) transports(dialTimeout time.Duration) (h1, h2 http.RoundTripper) {
	l.once.Do(func() {
		d := &net.Dialer{Timeout: dialTimeout}
		l.h1 = &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		}
		var h2c http.Protocols
		h2c.SetUnencryptedHTTP2(true) // HTTP/2 with prior knowledge, in plain
		l.h2 = &http.Transport{
			Protocols:              &h2c,
			DialContext:            d.DialContext,
			MaxResponseHeaderBytes: maxHeaderBytes,
			DisableCompression:     true,
		}
	})
	return l.h1, l.h2
}

// due reports whether k's denial should be logged now, and remembers it.
func (l *requestLayer) due(k logKey, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.logged[k]; ok && now.Sub(last) < denialLogEvery {
		return false
	}
	if l.logged == nil || len(l.logged) >= maxLogKeys {
		l.logged = map[logKey]time.Time{}
	}
	l.logged[k] = now
	return true
}

// trackPipe remembers c as a byte pipe to port n until done is called.
func (l *requestLayer) trackPipe(n int, c net.Conn) (done func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pipes == nil {
		l.pipes = map[int]map[net.Conn]struct{}{}
	}
	if l.pipes[n] == nil {
		l.pipes[n] = map[net.Conn]struct{}{}
	}
	l.pipes[n][c] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.pipes[n], c)
		if len(l.pipes[n]) == 0 {
			delete(l.pipes, n)
		}
	}
}

// closePipesGainingRules closes the byte-pipe connections of every port
// that has request rules in next and had none in prev: an unparsed
// connection cannot be held to them, so it is ended (fail closed) and its
// client reconnects into the HTTP layer.
func (p *Proxy) closePipesGainingRules(prev, next *policy.Policy) {
	l := &p.requests
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, cs := range l.pipes {
		if prev.For(n).HasRequestRules() || !next.For(n).HasRequestRules() {
			continue
		}
		for c := range cs {
			c.Close()
		}
		p.log.Warn("closed the byte-pipe connections of a port that now has request rules; their clients reconnect and are held to them", "port", n, "connections", len(cs))
	}
}

// requestALPN makes the explicit inbound listener of port n offer h2,
// http/1.1 and meshid/1 in ALPN while the port has request rules (so that
// curl and grpc-go over mTLS reach its HTTP layer, and an outbound
// meshid-proxy, which offers only meshid/1, is not refused); a byte-pipe
// port offers none, as before.
func (p *Proxy) requestALPN(cfg *tls.Config, n int) *tls.Config {
	withHTTP := cfg.Clone()
	withHTTP.NextProtos = append(withHTTP.NextProtos, "h2", "http/1.1", ALPN)
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if p.policy.Load().For(n).HasRequestRules() {
			return withHTTP, nil
		}
		return nil, nil
	}
	return cfg
}

// httpPeer is an admitted connection to a port with request rules: it is
// parsed as HTTP rather than piped.
type httpPeer struct {
	net.Conn
	port int
	peer spiffeid.ID // zero in plain TCP
	app  string      // the app's address
}

// requestRules returns c as an httpPeer when port n has request rules, so
// that the caller serves it with serveRequests; nil means a byte pipe.
func (p *Proxy) requestRules(n int, c net.Conn, peer spiffeid.ID, app string) *httpPeer {
	if !p.policy.Load().For(n).HasRequestRules() {
		return nil
	}
	return &httpPeer{Conn: c, port: n, peer: peer, app: app}
}

var h2Preface = []byte(http2.ClientPreface)

// serveRequests serves HTTP/1.1 or HTTP/2 (ALPN h2, or h2c with prior
// knowledge inside meshid's mTLS) on c until it ends, authorizing every
// request by the port's request rules in force at that moment.
func (p *Proxy) serveRequests(ctx context.Context, c *httpPeer) {
	done := p.conns.add(c.Conn)
	defer done()
	defer c.Close()
	conn, h2, err := detectHTTP2(c.Conn, p.cfg.HandshakeTimeout)
	if err != nil {
		p.log.Debug("connection closed before its first request", "port", c.port, "error", err.Error())
		return
	}
	h1t, h2t := p.requests.transports(p.cfg.HandshakeTimeout)
	rt := h1t
	if h2 {
		rt = h2t // the app is spoken to as the client spoke
	}
	h := &requestHandler{p: p, c: c}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", c.app
			pr.Out.Host = pr.In.Host
		},
		Transport:     rt,
		BufferPool:    copyBuffers{},
		FlushInterval: -1, // streams (gRPC, server-sent events) pass at once
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ErrorHandler:  h.appError,
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: p.cfg.HandshakeTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if h2 {
		// net/http serves HTTP/2 only from a listener it classifies
		// itself; x/net/http2's ServeConn serves one connection already
		// authenticated and classified here (the same implementation).
		//lint:ignore SA1019 see above
		h2s := &http2.Server{MaxConcurrentStreams: maxStreams, IdleTimeout: p.cfg.IdleTimeout}
		//lint:ignore SA1019 see above
		h2s.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, BaseConfig: srv, Handler: h})
		return
	}
	closed := make(chan struct{})
	_ = srv.Serve(&oneConn{c: &notifyClose{Conn: conn, closed: closed}, closed: closed})
}

// copyBuffers lends the reverse proxy the byte pipes' large buffers
// (bigBuffers), rather than a new 32 KiB one per request.
type copyBuffers struct{}

func (copyBuffers) Get() []byte  { return *bigBuffers.Get().(*[]byte) }
func (copyBuffers) Put(b []byte) { bigBuffers.Put(&b) }

// detectHTTP2 says whether c speaks HTTP/2: ALPN h2, or the HTTP/2
// client preface (h2c with prior knowledge); it returns a connection that
// reads again from the first byte.
func detectHTTP2(c net.Conn, wait time.Duration) (net.Conn, bool, error) {
	if tc, ok := c.(*tls.Conn); ok {
		switch tc.ConnectionState().NegotiatedProtocol {
		case "h2":
			return c, true, nil
		case "http/1.1":
			return c, false, nil
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	br := bufio.NewReaderSize(c, len(h2Preface))
	for i := 1; i <= len(h2Preface); i++ {
		b, err := br.Peek(i)
		if err != nil {
			return nil, false, err
		}
		if b[i-1] != h2Preface[i-1] {
			return &peeked{Conn: c, r: br}, false, nil
		}
	}
	return &peeked{Conn: c, r: br}, true, nil
}

// requestHandler authorizes and forwards the requests of one connection.
type requestHandler struct {
	p     *Proxy
	c     *httpPeer
	proxy *httputil.ReverseProxy
}

func (h *requestHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	port := h.p.policy.Load().For(h.c.port)
	grpc := isGRPC(r)
	// The connection's own rules are checked again: a policy change
	// reaches a kept-alive connection at its next request.
	d, path, err := port.Check(policy.Call{Peer: h.c.peer, Method: r.Method, EscapedPath: r.URL.EscapedPath(), Host: r.Host, GRPC: grpc})
	switch {
	case err != nil && d.Reason == policy.ReasonInvalidPath:
		h.deny(w, r, grpc, d, http.StatusBadRequest, "meshid: "+err.Error())
		return
	case err != nil:
		h.deny(w, r, grpc, d, http.StatusForbidden, "meshid: "+err.Error())
		return
	case !d.Allowed:
		h.deny(w, r, grpc, d, http.StatusForbidden, "meshid: "+d.Why())
		return
	case d.Audited:
		h.p.metrics.requests.WithLabelValues("audited").Inc()
		h.p.metrics.requestsAudited.WithLabelValues(d.Policy, d.Rule, d.Reason).Inc()
		h.logDecision("request allowed in audit mode; enforce would deny it", d, r, path)
	default:
		h.p.metrics.requests.WithLabelValues("allowed").Inc()
	}
	// The app sees the path the rules saw.
	if path != r.URL.EscapedPath() {
		r.URL.RawPath = path
		if r.URL.Path, err = url.PathUnescape(path); err != nil {
			h.deny(w, r, grpc, policy.Decision{Reason: policy.ReasonInvalidPath}, http.StatusBadRequest, "meshid: "+err.Error())
			return
		}
	}
	h.proxy.ServeHTTP(w, r)
}

// deny answers a refused request (HTTP status, or gRPC PERMISSION_DENIED
// as a trailers-only response), counts it and logs it once per interval.
// The connection stays open for the next request.
func (h *requestHandler) deny(w http.ResponseWriter, r *http.Request, grpc bool, d policy.Decision, status int, msg string) {
	h.p.metrics.requests.WithLabelValues("denied").Inc()
	h.p.metrics.requestsDenied.WithLabelValues(d.Policy, d.Rule, d.Reason).Inc()
	h.logDecision("request denied", d, r, r.URL.EscapedPath())
	if grpc {
		code := "7" // PERMISSION_DENIED
		if status == http.StatusBadRequest {
			code = "3" // INVALID_ARGUMENT
		}
		grpcStatus(w, code, msg)
		return
	}
	http.Error(w, msg, status)
}

func (h *requestHandler) logDecision(what string, d policy.Decision, r *http.Request, path string) {
	if !h.p.requests.due(logKey{peer: h.c.peer, policy: d.Policy, rule: d.Rule, audited: d.Audited}, h.p.cfg.Clock.Now()) {
		return
	}
	attrs := []any{"port", h.c.port, "peer_id", h.c.peer.String(), "policy", d.Policy, "rule", d.Rule, "reason", d.Reason, "repeats_logged_every", denialLogEvery}
	if r != nil {
		attrs = append(attrs, "method", r.Method, "path", path)
	}
	h.p.log.Warn(what, attrs...)
}

// appError answers a request the app could not be reached for.
func (h *requestHandler) appError(w http.ResponseWriter, r *http.Request, err error) {
	h.p.log.Debug("the app did not answer", "port", h.c.port, "app", h.c.app, "error", err.Error())
	if isGRPC(r) {
		grpcStatus(w, "14", "meshid: the app did not answer") // UNAVAILABLE
		return
	}
	http.Error(w, "meshid: the app did not answer", http.StatusBadGateway)
}

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcStatus writes a trailers-only gRPC response.
func grpcStatus(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", code)
	w.Header().Set("Grpc-Message", grpcEscape(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcEscape percent-encodes a grpc-message as the gRPC HTTP/2 protocol
// asks (bytes outside printable ASCII, and %).
func grpcEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// oneConn is a listener that accepts one connection, then waits until
// it is closed, so that http.Server.Serve returns when it ends.
type oneConn struct {
	mu     sync.Mutex
	c      net.Conn
	closed chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return dummyAddr{} }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "tcp" }
func (dummyAddr) String() string  { return "meshid-request-layer" }

// notifyClose closes closed when the connection is closed.
type notifyClose struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyClose) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
