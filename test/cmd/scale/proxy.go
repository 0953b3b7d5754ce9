package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
)

// sourceIP is the loopback address simulated proxy i connects from: each
// proxy has an address of its own, as each pod has, so the CA's
// per-caller limits see one caller per proxy. It skips octets 0 and 255
// and starts at 127.10.1.1, clear of 127.0.0.1.
func sourceIP(i int) net.IP {
	const per = 254
	return net.IPv4(127, byte(10+i/(per*per)), byte(1+i/per%per), byte(1+i%per))
}

// maxProxies is how many sourceIP can number (127.10.x.y to 127.255.x.y).
const maxProxies = 246 * 254 * 254

// proxy is one simulated meshid-proxy: one gRPC connection over mTLS with
// its own certificate, holding a WatchBundle and a WatchPolicy stream and
// sending ReportStatus heartbeats on it.
type proxy struct {
	i      int
	home   int // the replica it first connects to
	src    net.IP
	cert   *tls.Certificate
	pod    string
	status *identityv1.ProxyStatus // what it reports, less the bundle
	conn   *grpc.ClientConn
	dials  atomic.Int64
	dialed atomic.Int64 // Unix ns of the latest dial

	on         atomic.Int32 // replica of the connection last made
	bundleUp   atomic.Int64 // Unix ns the current bundle stream's first message came; 0 while down
	policyUp   atomic.Int64 // the same for the policy stream
	gotNew     atomic.Int64 // Unix ns the new bundle arrived; 0 before
	bundleSHA  atomic.Pointer[string]
	breaks     atomic.Int64           // bundle streams that broke or could not open
	lastBreak  atomic.Pointer[string] // why the latest one did
	firstReady chan struct{}          // closed at the first bundle
}

// swarm is the simulated proxies and what they share: the CA replicas'
// addresses and the anchors that verify the CA (read-only).
type swarm struct {
	addrs   []string
	anchors x509bundle.Source
	caID    spiffeid.ID
	newSHA  string // the bundle whose arrival is timed
	proxies []*proxy
}

// dial connects p from its own address: first to its home replica, after
// that to a random one, trying the others when one refuses (a Service's
// endpoints, on loopback).
func (f *swarm) dial(p *proxy) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		p.dialed.Store(time.Now().UnixNano())
		start := p.home
		if p.dials.Add(1) > 1 {
			start = rand.IntN(len(f.addrs))
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.src}, Timeout: 5 * time.Second}
		var lastErr error
		for k := range f.addrs {
			r := (start + k) % len(f.addrs)
			c, err := d.DialContext(ctx, "tcp", f.addrs[r])
			if err == nil {
				p.on.Store(int32(r))
				return c, nil
			}
			lastErr = err
		}
		return nil, lastErr
	}
}

// connect opens p's connection (lazily, as gRPC does: the first stream
// dials).
func (f *swarm) connect(p *proxy) error {
	authorize := func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		if got != f.caID {
			return fmt.Errorf("the CA presented %s, want %s", got, f.caID)
		}
		return nil
	}
	cfg := tlsconfig.TLSClientConfig(f.anchors, authorize)
	cfg.MinVersion = tls.VersionTLS13
	cert := p.cert
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	conn, err := grpc.NewClient("passthrough:///meshid-ca",
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(f.dial(p)),
		// Small buffers keep the simulator cheap; the CA's side, which is
		// what is measured, keeps its own defaults.
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	if err != nil {
		return err
	}
	p.conn = conn
	return nil
}

// watchBundle follows the bundle stream as meshid-proxy does: reconnect
// with the same backoff after a break, until ctx ends.
func (f *swarm) watchBundle(ctx context.Context, p *proxy) {
	client := identityv1.NewIdentityClient(p.conn)
	backoff := rotation.NewBackoff(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		stream, err := client.WatchBundle(ctx, &identityv1.WatchBundleRequest{})
		first := true
		for err == nil {
			var b *identityv1.Bundle
			if b, err = stream.Recv(); err != nil {
				break
			}
			now := time.Now().UnixNano()
			sha := b.GetSha256()
			p.bundleSHA.Store(&sha)
			if sha == f.newSHA && p.gotNew.Load() == 0 {
				p.gotNew.Store(now)
			}
			if first {
				first = false
				p.bundleUp.Store(now)
				backoff.Reset()
				select {
				case <-p.firstReady:
				default:
					close(p.firstReady)
				}
			}
		}
		p.bundleUp.Store(0)
		if ctx.Err() == nil {
			p.breaks.Add(1)
			msg := err.Error()
			p.lastBreak.Store(&msg)
		}
		if !sleep(ctx, backoff.Next()) {
			return
		}
	}
}

// watchPolicy follows the policy stream of p's pod, likewise.
func (f *swarm) watchPolicy(ctx context.Context, p *proxy) {
	client := identityv1.NewIdentityClient(p.conn)
	backoff := rotation.NewBackoff(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		stream, err := client.WatchPolicy(ctx, &identityv1.WatchPolicyRequest{Pod: p.pod})
		first := true
		for err == nil {
			if _, err = stream.Recv(); err == nil && first {
				first = false
				p.policyUp.Store(time.Now().UnixNano())
				backoff.Reset()
			}
		}
		p.policyUp.Store(0)
		if !sleep(ctx, backoff.Next()) {
			return
		}
	}
}

// report sends p's status once.
func (f *swarm) report(ctx context.Context, p *proxy) error {
	st := proto.Clone(p.status).(*identityv1.ProxyStatus)
	if sha := p.bundleSHA.Load(); sha != nil {
		st.BundleSha256 = *sha
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := identityv1.NewIdentityClient(p.conn).ReportStatus(ctx, st)
	return err
}

// heartbeatCounts are what the heartbeat loops did.
type heartbeatCounts struct {
	ok, failed atomic.Int64
	lastErr    atomic.Pointer[string]
}

// heartbeats makes every proxy report every interval, proxy i at offset
// i/N of the interval (a fleet's heartbeats spread over time), from
// workers goroutines, until ctx ends.
func (f *swarm) heartbeats(ctx context.Context, interval time.Duration, workers int, c *heartbeatCounts) {
	start := time.Now()
	n := len(f.proxies)
	for w := range min(workers, n) {
		go func() {
			for round := 0; ctx.Err() == nil; round++ {
				for i := w; i < n && ctx.Err() == nil; i += workers {
					due := start.Add(time.Duration(round)*interval + time.Duration(int64(interval)*int64(i)/int64(n)))
					if !sleep(ctx, time.Until(due)) {
						return
					}
					if err := f.report(ctx, f.proxies[i]); err != nil {
						if ctx.Err() == nil {
							c.failed.Add(1)
							msg := err.Error()
							c.lastErr.Store(&msg)
						}
						continue
					}
					c.ok.Add(1)
				}
			}
		}()
	}
}

// count returns how many proxies pass ok.
func (f *swarm) count(ok func(*proxy) bool) int {
	n := 0
	for _, p := range f.proxies {
		if ok(p) {
			n++
		}
	}
	return n
}

// waitUntil polls cond every 100 ms until it holds, ctx ends or timeout
// passes; it reports whether cond held.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || !sleep(ctx, 100*time.Millisecond) {
			return cond()
		}
	}
	return true
}

// sleep waits d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func newStatus(serial, issuerSHA, anchorSHA string, notAfter time.Time, heartbeat time.Duration) *identityv1.ProxyStatus {
	inst := make([]byte, 8)
	for k := range inst {
		inst[k] = byte(rand.IntN(256))
	}
	return &identityv1.ProxyStatus{
		Instance: hex.EncodeToString(inst), LeafSerial: serial, LeafIssuerSha256: issuerSHA, LeafAnchorSha256: anchorSHA,
		LeafNotAfter: timestamppb.New(notAfter), HeartbeatSeconds: int64(heartbeat / time.Second),
	}
}
