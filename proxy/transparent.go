package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/proxy/redirect"
	"github.com/meshid/meshid/rotation"
)

// Transparent configures the listeners meshid-init redirects a pod's TCP
// to (package redirect): every inbound connection, and every outbound one
// the app opens.
type Transparent struct {
	// InboundListen receives every redirected inbound connection; empty
	// means ":15006".
	InboundListen string
	// OutboundListen receives every redirected outbound connection; empty
	// means 127.0.0.1:15001 and, when the pod has IPv6, [::1]:15001 (where
	// the redirect sends IPv6 connections).
	OutboundListen string
	// Destinations says who is behind an address the app dials; nil means
	// the CA's discovery stream (WatchDestinations).
	Destinations Resolver
	// Egress is what happens to a connection to an unmeshed destination;
	// empty means EgressAllow.
	Egress Egress
	// Probes are the plain HTTP requests the node (kubelet) may make to the
	// app whatever the policy says; nil means none.
	Probes []Probe
	// Node is the address probes come from (the pod's status.hostIP); the
	// zero value admits no probe.
	Node netip.Addr
	// RedirectStateFile is where meshid-init wrote what it programmed and
	// read back (redirect.WriteState), shown on /identity; empty means the
	// redirect's state is unknown.
	RedirectStateFile string
	// DetectTimeout is how long an inbound connection may take to send its
	// first bytes before it is taken as plain (a protocol where the server
	// speaks first), on a port whose mode admits plain
	// (all-unauthenticated); elsewhere it is the handshake timeout. 0 means
	// 1 s.
	DetectTimeout time.Duration
}

// Egress is what a transparent proxy does with a connection to a
// destination outside the mesh.
type Egress string

// Egress modes.
const (
	EgressAllow Egress = "allow-unmeshed" // pass it through in plain
	EgressDeny  Egress = "deny-unmeshed"  // refuse it
)

// Validate reports whether e is a known mode.
func (e Egress) Validate() error {
	switch e {
	case "", EgressAllow, EgressDeny:
		return nil
	}
	return fmt.Errorf("proxy: egress mode %q: want %s or %s", e, EgressAllow, EgressDeny)
}

// Resolver says who is behind an address the app dials.
type Resolver interface {
	// Resolve returns where to send a connection the app opened to dst,
	// and how. An error means the answer is not known (the CA cannot be
	// reached, say): the connection is refused, never sent in plain.
	Resolve(ctx context.Context, dst netip.AddrPort) (Destination, error)
}

// Destination is where a transparent outbound connection goes.
type Destination struct {
	// Addr is what to dial: the address the app dialled, or an endpoint of
	// the Service behind it.
	Addr netip.AddrPort
	// Meshed means a meshid-proxy terminates Addr: the connection goes
	// with mTLS, and the server must be ID.
	Meshed bool
	// ID is the server's identity; required when Meshed.
	ID spiffeid.ID
}

// Reasons a transparent connection is refused.
const (
	reasonNotRedirected = "not_redirected"
	reasonUnresolved    = "destination_unresolved"
	reasonUnmeshed      = "unmeshed_refused"
)

// Labels of meshid_proxy_forwarded_total.
const (
	meshed   = "meshed"
	unmeshed = "unmeshed"
	plain    = "plain"
)

// openDiscovery opens the CA's WatchDestinations stream over a connection
// of its own that presents the proxy's current certificate.
func (p *Proxy) openDiscovery(ctx context.Context) (identityv1.Discovery_WatchDestinationsClient, func(), error) {
	cert, err := p.waitCertificate(ctx)
	if err != nil {
		return nil, nil, err
	}
	conn, err := rotation.DialCA(p.cfg.CA, p.store, p.cfg.CAID, rotation.WithClientCertificate(cert))
	if err != nil {
		return nil, nil, err
	}
	stream, err := identityv1.NewDiscoveryClient(conn).WatchDestinations(ctx)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("proxy: discovery: %w", err)
	}
	return stream, func() { conn.Close() }, nil
}

func (t *Transparent) withDefaults() {
	if t.InboundListen == "" {
		t.InboundListen = ":" + strconv.Itoa(redirect.DefaultInboundPort)
	}
	if t.Egress == "" {
		t.Egress = EgressAllow
	}
	if t.DetectTimeout <= 0 {
		t.DetectTimeout = time.Second
	}
}

// tlsConfigs caches the per-port server and per-identity client TLS
// configurations of the transparent listeners; each reads the certificate,
// bundle and policy in force at every handshake, so they never go stale.
type tlsConfigs struct {
	server sync.Map // int -> *tls.Config
	client sync.Map // spiffeid.ID -> *tls.Config
}

func (p *Proxy) transparentServerTLS(port int) *tls.Config {
	if c, ok := p.tlsCache.server.Load(port); ok {
		return c.(*tls.Config)
	}
	cfg := p.serverTLS(port)
	cfg.NextProtos = []string{ALPN}
	c, _ := p.tlsCache.server.LoadOrStore(port, cfg)
	return c.(*tls.Config)
}

func (p *Proxy) transparentClientTLS(id spiffeid.ID) *tls.Config {
	if c, ok := p.tlsCache.client.Load(id); ok {
		return c.(*tls.Config)
	}
	c, _ := p.tlsCache.client.LoadOrStore(id, p.clientTLS(id))
	return c.(*tls.Config)
}

// transparentListeners opens the inbound and outbound transparent
// listeners.
func (p *Proxy) transparentListeners() ([]*listener, error) {
	t := p.cfg.Transparent
	in, err := net.Listen("tcp", t.InboundListen)
	if err != nil {
		return nil, fmt.Errorf("proxy: transparent inbound %s: %w", t.InboundListen, err)
	}
	ls := []*listener{{lis: in, slots: make(chan struct{}, p.cfg.MaxConnections), log: p.log, handle: p.transparentInbound}}
	addr := t.OutboundListen
	if addr == "" {
		addr = "127.0.0.1:" + strconv.Itoa(redirect.DefaultOutboundPort)
	}
	out, err := net.Listen("tcp", addr)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("proxy: transparent outbound %s: %w", addr, err)
	}
	ls = append(ls, &listener{lis: out, slots: make(chan struct{}, p.cfg.MaxConnections), log: p.log, handle: p.transparentOutbound})
	outs := []string{out.Addr().String()}
	if t.OutboundListen == "" {
		six := "[::1]:" + strconv.Itoa(redirect.DefaultOutboundPort)
		if out6, err := net.Listen("tcp", six); err == nil {
			ls = append(ls, &listener{lis: out6, slots: make(chan struct{}, p.cfg.MaxConnections), log: p.log, handle: p.transparentOutbound})
			outs = append(outs, out6.Addr().String())
		} else {
			p.log.Debug("no IPv6 outbound listener (the pod has no IPv6 loopback)", "error", err.Error())
		}
	}
	p.log.Info("transparent listeners", "inbound", in.Addr().String(), "outbound", outs, "egress", string(t.Egress))
	return ls, nil
}

// transparentInbound serves one redirected inbound connection: a meshid
// peer's mTLS is terminated and authorized by the policy of the port the
// peer dialled; anything else is plain, admitted only where that port's
// mode allows it (or as a probe from the node). Then it goes to the app on
// the address the peer dialled.
func (p *Proxy) transparentInbound(ctx context.Context, c net.Conn) {
	const dir = "inbound"
	p.metrics.connections.WithLabelValues(dir).Inc()
	p.metrics.active.WithLabelValues(dir).Inc()
	defer p.metrics.active.WithLabelValues(dir).Dec()
	defer c.Close()
	var appConn, peerConn net.Conn
	aside(func() { appConn, peerConn = p.setUpTransparentInbound(ctx, c) })
	if hp, ok := peerConn.(*httpPeer); ok {
		p.serveRequests(ctx, hp)
		return
	}
	if appConn != nil {
		p.pipe(dir, appConn, peerConn)
	}
}

func (p *Proxy) setUpTransparentInbound(ctx context.Context, c net.Conn) (appConn, peerConn net.Conn) {
	const dir = "inbound"
	log := p.log.With("direction", dir, "remote", c.RemoteAddr().String())
	dst, err := originalDestination(c)
	if err != nil {
		p.refuse(log, dir, err)
		return nil, nil
	}
	n := int(dst.Port())
	log = log.With("port", n)
	_ = c.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	wait := p.cfg.Transparent.DetectTimeout
	if p.policy.Load().For(n).Mode != policy.AllUnauthenticated {
		// Plain is refused on this port anyway (a probe speaks at once):
		// a meshed peer slow to send its ClientHello (a busy proxy) gets
		// the whole handshake timeout, not taken for plain after DetectTimeout.
		wait = p.cfg.HandshakeTimeout
	}
	kind, replay, err := sniff(c, wait)
	if err != nil {
		p.metrics.handshake.WithLabelValues(dir, reasonNoData).Inc()
		log.Debug("connection closed before sending anything", "error", err.Error())
		return nil, nil
	}
	mesh, transport, peer := unmeshed, plain, spiffeid.ID{}
	var probe bool
	switch kind {
	case sniffedMeshid:
		tc := tls.Server(replay, p.transparentServerTLS(n))
		if err := tc.HandshakeContext(ctx); err != nil {
			p.refuse(log, dir, err)
			return nil, nil
		}
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) > 0 {
			peer, _ = x509svid.IDFromCert(cs.PeerCertificates[0]) // verified in VerifyConnection
		}
		mesh, transport, peerConn = meshed, tlsVersion(cs.Version), tc
	default:
		if mode := p.policy.Load().For(n).Mode; mode != policy.AllUnauthenticated {
			var ok bool
			if peerConn, ok = p.admitProbe(log, c, replay, n); !ok {
				p.refuse(log, dir, &refusal{reason: reasonPlaintext, err: fmt.Errorf("proxy: plain TCP refused on port %d (mode %s); connect with mTLS", n, mode)})
				return nil, nil
			}
			probe = true
		} else {
			peerConn = replay
		}
	}
	_ = c.SetDeadline(time.Time{})
	if hp := p.requestRules(n, peerConn, peer, dst.String()); hp != nil && !probe {
		p.forwarded(dir, mesh, transport, peer)
		return nil, hp
	}
	d := net.Dialer{Timeout: p.cfg.HandshakeTimeout}
	appConn, err = d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		p.refuse(log, dir, &refusal{reason: reasonDial, err: fmt.Errorf("proxy: app %s: %w", dst, err)})
		return nil, nil
	}
	p.forwarded(dir, mesh, transport, peer)
	log.Debug("connection accepted", "peer_id", peer.String(), "probe", probe)
	return direct(appConn), peerConn
}

// transparentOutbound serves one connection the app opened: a meshed
// destination gets mTLS and must prove the identity the CA named; an
// unmeshed one is passed through in plain, or refused under EgressDeny.
func (p *Proxy) transparentOutbound(ctx context.Context, app net.Conn) {
	const dir = "outbound"
	p.metrics.connections.WithLabelValues(dir).Inc()
	p.metrics.active.WithLabelValues(dir).Inc()
	defer p.metrics.active.WithLabelValues(dir).Dec()
	defer app.Close()
	var peer net.Conn
	aside(func() { peer = p.dialTransparent(ctx, app) })
	if peer != nil {
		p.pipe(dir, app, peer)
	}
}

func (p *Proxy) dialTransparent(ctx context.Context, app net.Conn) net.Conn {
	const dir = "outbound"
	log := p.log.With("direction", dir)
	orig, err := originalDestination(app)
	if err != nil {
		p.refuse(log, dir, err)
		return nil
	}
	log = log.With("target", orig.String())
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	dst, err := p.cfg.Transparent.Destinations.Resolve(hctx, orig)
	switch {
	case err != nil:
		p.refuse(log, dir, &refusal{reason: reasonUnresolved, err: fmt.Errorf("proxy: who is behind %s is not known, so the connection is refused rather than sent in plain: %w", orig, err)})
		return nil
	case dst.Meshed && dst.ID.IsZero():
		p.refuse(log, dir, &refusal{reason: reasonUnresolved, err: fmt.Errorf("proxy: %s is meshed but its identity is not known; refused", dst.Addr)})
		return nil
	case !dst.Meshed && p.cfg.Transparent.Egress == EgressDeny:
		p.refuse(log, dir, &refusal{reason: reasonUnmeshed, err: fmt.Errorf("proxy: %s is outside the mesh and egress is %s", dst.Addr, EgressDeny)})
		return nil
	}
	var d net.Dialer
	raw, err := d.DialContext(hctx, "tcp", dst.Addr.String())
	if err != nil {
		p.refuse(log, dir, &refusal{reason: reasonDial, err: fmt.Errorf("proxy: %w", err)})
		return nil
	}
	if !dst.Meshed {
		p.forwarded(dir, unmeshed, plain, spiffeid.ID{})
		return direct(raw)
	}
	tc := tls.Client(direct(raw), p.transparentClientTLS(dst.ID))
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		p.refuse(log.With("server_id", dst.ID.String()), dir, err)
		return nil
	}
	p.forwarded(dir, meshed, tlsVersion(tc.ConnectionState().Version), dst.ID)
	return tc
}

// originalDestination is where a redirected connection was going; a
// connection made to the listener itself is refused (it would loop).
func originalDestination(c net.Conn) (netip.AddrPort, error) {
	rc, ok := c.(redirect.Conn)
	if !ok {
		return netip.AddrPort{}, &refusal{reason: reasonNotRedirected, err: fmt.Errorf("proxy: %T is not a TCP connection", c)}
	}
	dst, err := redirect.OriginalDestination(rc)
	if err != nil {
		if errors.Is(err, redirect.ErrNotRedirected) {
			err = fmt.Errorf("proxy: a connection to the transparent listener itself is refused (only meshid-init's redirect leads here): %w", err)
		}
		return netip.AddrPort{}, &refusal{reason: reasonNotRedirected, err: err}
	}
	return dst, nil
}

// forwarded counts a connection that was set up and is being forwarded.
func (p *Proxy) forwarded(dir, mesh, transport string, peer spiffeid.ID) {
	id := ""
	if !peer.IsZero() {
		id = peer.String()
	}
	p.metrics.forwarded.WithLabelValues(dir, mesh, transport, id).Inc()
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "tls1.3"
	case tls.VersionTLS12:
		return "tls1.2"
	}
	return "tls"
}
