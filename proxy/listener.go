package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/rotation"
)

// listener is one inbound or outbound listener.
type listener struct {
	lis    net.Listener
	handle func(ctx context.Context, c net.Conn)
	slots  chan struct{} // one per connection allowed at once
	log    *slog.Logger
	clock  clock.Clock // paces the accept retries
}

// listen opens every listener, or none.
func (p *Proxy) listen() ([]*listener, error) {
	var ls []*listener
	fail := func(err error) ([]*listener, error) {
		for _, l := range ls {
			l.lis.Close()
		}
		return nil, err
	}
	for _, in := range p.cfg.Inbound {
		lis, err := net.Listen("tcp", in.Listen)
		if err != nil {
			return fail(fmt.Errorf("proxy: inbound %s: %w", in.Listen, err))
		}
		port, _ := listenPort(lis.Addr().String())
		p.log.Info("inbound listening", "listen", lis.Addr().String(), "app", in.App)
		// One TLS configuration per listener: it reads the certificate,
		// bundle and policy in force at each handshake.
		cfg := p.requestALPN(p.serverTLS(port), port)
		ls = append(ls, &listener{lis: lis, slots: make(chan struct{}, p.cfg.MaxConnections), log: p.log, clock: p.cfg.Clock,
			handle: func(ctx context.Context, c net.Conn) { p.inbound(ctx, port, in.App, cfg, c) }})
	}
	for _, out := range p.cfg.Outbound {
		lis, err := net.Listen("tcp", out.Listen)
		if err != nil {
			return fail(fmt.Errorf("proxy: outbound %s: %w", out.Listen, err))
		}
		p.log.Info("outbound listening", "listen", lis.Addr().String(), "target", out.Target, "server_id", out.ID.String())
		cfg := p.clientTLS(out.ID)
		ls = append(ls, &listener{lis: lis, slots: make(chan struct{}, p.cfg.MaxConnections), log: p.log, clock: p.cfg.Clock,
			handle: func(ctx context.Context, c net.Conn) { p.outbound(ctx, out, cfg, c) }})
	}
	if p.cfg.Transparent != nil {
		tls, err := p.transparentListeners()
		if err != nil {
			return fail(err)
		}
		ls = append(ls, tls...)
	}
	return ls, nil
}

// serve accepts until ctx ends. A full set of connections waits in the
// kernel's accept queue; an accept error (out of file descriptors, say) is
// retried with backoff rather than taking the proxy down.
func (l *listener) serve(ctx context.Context) error {
	go func() { <-ctx.Done(); l.lis.Close() }()
	backoff := rotation.NewBackoff(5*time.Millisecond, time.Second)
	for {
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := l.lis.Accept()
		if err != nil {
			<-l.slots
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			wait := backoff.Next()
			l.log.Error("accept failed; retrying", "listen", l.lis.Addr().String(), "error", err.Error(), rotation.RetryIn(wait))
			select {
			case <-ctx.Done():
				return nil
			case <-l.clock.After(wait):
			}
			continue
		}
		backoff.Reset()
		go func() {
			defer func() { <-l.slots }()
			l.handle(ctx, direct(c))
		}()
	}
}

// inbound serves one connection to listen port n: mTLS (or plain TCP where
// the port's mode allows it), then the app.
func (p *Proxy) inbound(ctx context.Context, n int, app string, cfg *tls.Config, c net.Conn) {
	const dir = "inbound"
	p.metrics.connections.WithLabelValues(dir).Inc()
	p.metrics.active.WithLabelValues(dir).Inc()
	defer p.metrics.active.WithLabelValues(dir).Dec()
	defer c.Close()
	var appConn, peerConn net.Conn
	aside(func() { appConn, peerConn = p.setUpInbound(ctx, n, app, cfg, c) })
	if hp, ok := peerConn.(*httpPeer); ok {
		p.serveRequests(ctx, hp)
		return
	}
	if appConn != nil {
		defer p.requests.trackPipe(n, peerConn)()
		p.pipe(dir, appConn, peerConn)
	}
}

// setUpInbound authenticates and authorizes the peer on c and dials the
// app; on a refusal it logs, counts and returns nils.
func (p *Proxy) setUpInbound(ctx context.Context, n int, app string, cfg *tls.Config, c net.Conn) (appConn, peerConn net.Conn) {
	const dir = "inbound"
	log := p.log.With("direction", dir, "port", n, "remote", c.RemoteAddr().String())
	_ = c.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(c, 16) // the minimum: it only peeks one byte, and lives as long as the connection
	first, err := br.Peek(1)
	if err != nil {
		// A health check or port scan: not worth a warning.
		p.metrics.handshake.WithLabelValues(dir, reasonNoData).Inc()
		log.Debug("connection closed before sending anything", "error", err.Error())
		return nil, nil
	}
	peerConn = &peeked{Conn: c, r: br}
	peer := "unauthenticated"
	mesh, transport, peerID := unmeshed, plain, spiffeid.ID{}
	if first[0] != 0x16 { // not a TLS handshake record
		if mode := p.policy.Load().For(n).Mode; mode != policy.AllUnauthenticated {
			p.refuse(log, dir, &refusal{reason: reasonPlaintext, err: fmt.Errorf("proxy: plain TCP refused on port %d (mode %s); connect with mTLS", n, mode)})
			return nil, nil
		}
	} else {
		tc := tls.Server(peerConn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			p.refuse(log, dir, err)
			return nil, nil
		}
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) > 0 {
			if id, err := x509svid.IDFromCert(cs.PeerCertificates[0]); err == nil { // verified in VerifyConnection
				peer, peerID, mesh = id.String(), id, meshed
			}
		}
		transport = tlsVersion(cs.Version)
		peerConn = tc
	}
	_ = c.SetDeadline(time.Time{})
	if hp := p.requestRules(n, peerConn, peerID, app); hp != nil {
		p.forwarded(dir, mesh, transport, peerID)
		return nil, hp
	}
	d := net.Dialer{Timeout: p.cfg.HandshakeTimeout}
	appConn, err = d.DialContext(ctx, "tcp", app)
	if err != nil {
		p.refuse(log, dir, &refusal{reason: reasonDial, err: fmt.Errorf("proxy: app %s: %w", app, err)})
		return nil, nil
	}
	p.forwarded(dir, mesh, transport, peerID)
	log.Debug("connection accepted", "peer_id", peer)
	return direct(appConn), peerConn
}

// outbound serves one connection from the app: dial the target with mTLS
// and check who answered.
func (p *Proxy) outbound(ctx context.Context, out Outbound, cfg *tls.Config, app net.Conn) {
	const dir = "outbound"
	p.metrics.connections.WithLabelValues(dir).Inc()
	p.metrics.active.WithLabelValues(dir).Inc()
	defer p.metrics.active.WithLabelValues(dir).Dec()
	defer app.Close()
	var tc *tls.Conn
	aside(func() { tc = p.dialOutbound(ctx, out, cfg) })
	if tc != nil {
		p.pipe(dir, app, tc)
	}
}

// dialOutbound dials out's target with mTLS and checks who answered; on a
// refusal it logs, counts and returns nil.
func (p *Proxy) dialOutbound(ctx context.Context, out Outbound, cfg *tls.Config) *tls.Conn {
	const dir = "outbound"
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(hctx, "tcp", out.Target)
	if err != nil {
		p.refuse(p.log.With("direction", dir, "target", out.Target), dir, &refusal{reason: reasonDial, err: fmt.Errorf("proxy: %w", err)})
		return nil
	}
	tc := tls.Client(direct(raw), cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		p.refuse(p.log.With("direction", dir, "target", out.Target), dir, err)
		return nil
	}
	id, _ := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0]) // verified in VerifyConnection
	p.forwarded(dir, meshed, tlsVersion(tc.ConnectionState().Version), id)
	return tc
}

// aside runs f, a connection's set-up (dials, the TLS handshake), on a
// goroutine of its own and waits for it. The handshake's cryptography
// (ML-KEM above all) and the dialer grow a goroutine's stack to tens of
// KiB; on the connection's goroutine, which then copies for the
// connection's whole life, that stack would stay (Go gives a stack back
// only by halves, at garbage collections). A short-lived goroutine's stack
// goes back to the runtime's pool at once, for the next set-up.
func aside(f func()) {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	<-done
}

// refuse logs and counts a connection that was not forwarded.
func (p *Proxy) refuse(log *slog.Logger, dir string, err error) {
	reason, peer := reasonOf(err)
	p.metrics.handshake.WithLabelValues(dir, reason).Inc()
	attrs := []any{"reason", reason, "error", err.Error()}
	if !peer.IsZero() {
		attrs = append(attrs, "peer_id", peer.String())
	}
	if reason == reasonDenied {
		var d *policy.DeniedError
		if errors.As(err, &d) {
			p.metrics.denials.WithLabelValues(fmt.Sprint(d.Port), d.Peer.String()).Inc()
		}
	}
	log.Warn("connection refused", attrs...)
}

// peeked is a net.Conn whose first bytes were read into r.
type peeked struct {
	net.Conn
	r io.Reader
}

func (p *peeked) Read(b []byte) (int, error) { return p.r.Read(b) }

// CloseWrite passes a half-close on to the connection underneath.
func (p *peeked) CloseWrite() error {
	if cw, ok := p.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return p.Conn.Close()
}
