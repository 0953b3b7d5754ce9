package proxy

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"math/rand/v2"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/proxy/state"
	"github.com/meshid/meshid/rotation"
)

// heartbeat is how often the proxy reports its status to the CA.
const heartbeat = 10 * time.Second

func newInstance() string {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// report tells the CA what this proxy holds, at every change and every
// heartbeat, over a connection that presents the proxy's certificate (made
// again when the certificate changes, as a TLS connection keeps the
// identity it was opened with).
func (p *Proxy) report(ctx context.Context) error {
	var (
		conn    *grpc.ClientConn
		connFor *tls.Certificate
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	tick := p.cfg.Clock.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		changed := p.store.Changed()
		snap := p.store.Load()
		if cert := snap.Certificate(); cert != nil {
			if cert != connFor {
				if conn != nil {
					conn.Close()
				}
				var err error
				conn, err = rotation.DialCA(p.cfg.CA, p.store, p.cfg.CAID, rotation.WithClientCertificate(cert))
				if err != nil {
					p.log.Warn("cannot dial the CA to report status", "error", err)
					conn = nil
				} else {
					connFor = cert
				}
			}
			if conn != nil {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := identityv1.NewIdentityClient(conn).ReportStatus(rctx, p.status(snap))
				cancel()
				if err != nil && ctx.Err() == nil {
					p.log.Debug("status report failed", "error", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C():
		}
	}
}

func (p *Proxy) status(snap *state.Snapshot) *identityv1.ProxyStatus {
	st := &identityv1.ProxyStatus{Instance: p.instance, HeartbeatSeconds: int64(heartbeat / time.Second)}
	if snap.Bundle != nil {
		st.BundleSha256 = snap.Bundle.SHA256()
	}
	if snap.SVID != nil {
		leaf := snap.SVID.Certificates[0]
		st.LeafSerial = leaf.SerialNumber.Text(16)
		st.LeafNotAfter = timestamppb.New(leaf.NotAfter)
		if len(snap.SVID.Certificates) > 1 {
			st.LeafIssuerSha256 = bundle.Fingerprint(snap.SVID.Certificates[1])
		}
		if snap.Bundle != nil {
			if _, chains, err := x509svid.Verify(snap.SVID.Certificates, snap.Bundle.X509Bundle(p.cfg.TrustDomain)); err == nil {
				st.LeafAnchorSha256 = bundle.Fingerprint(chains[0][len(chains[0])-1])
			}
		}
	}
	return st
}

// reissue follows the CA's request that leaves from an older issuer be
// renewed: when the proxy's leaf was signed by another issuer than the
// CA's, it renews at a random moment within the window.
func (p *Proxy) reissue(ctx context.Context, issuerSHA256 string, window time.Duration) {
	if window <= 0 || issuerSHA256 == "" || p.renewer == nil {
		return
	}
	svid := p.store.Load().SVID
	if svid == nil || len(svid.Certificates) < 2 || bundle.Fingerprint(svid.Certificates[1]) == issuerSHA256 {
		return
	}
	delay := rand.N(window)
	p.log.Info("the CA asks for certificates from its new issuer; renewing", "in", delay.Round(time.Millisecond))
	go func() {
		select {
		case <-ctx.Done():
		case <-p.cfg.Clock.After(delay):
			p.renewer.RenewNow()
		}
	}()
}
