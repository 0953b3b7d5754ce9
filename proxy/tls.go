package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/proxy/state"
)

// refusal is why a connection was not forwarded; reason labels metrics.
type refusal struct {
	reason string
	peer   spiffeid.ID // zero when unknown
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// Reasons a connection is refused before forwarding.
const (
	reasonNoCertificate = "no_client_certificate"
	reasonUntrusted     = "untrusted_certificate"
	reasonDenied        = "policy_denied"
	reasonPlaintext     = "plaintext_refused"
	reasonWrongServer   = "unexpected_server_identity"
	reasonHandshake     = "handshake_failed"
	reasonDial          = "dial_failed"
	reasonNotReady      = "no_certificate_yet"
	reasonNoData        = "closed_before_handshake"
)

func reasonOf(err error) (string, spiffeid.ID) {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason, r.peer
	}
	return reasonHandshake, spiffeid.ID{}
}

// certificate returns the workload certificate for crypto/tls.
func (p *Proxy) certificate() (*tls.Certificate, error) {
	if c := p.store.Load().Certificate(); c != nil {
		return c, nil
	}
	return nil, &refusal{reason: reasonNotReady, err: errors.New("proxy: no certificate yet")}
}

// anyTrustDomain serves the proxy's anchors for every trust domain but a
// federated one: under all-authenticated, a peer is trusted when our
// anchors signed it, whatever trust domain it names; a peer of a federated
// trust domain is verified against that domain's own bundle only (and then
// admitted only by a rule naming it: Port.AuthorizeForeign).
type anyTrustDomain struct{ snap *state.Snapshot }

func (a anyTrustDomain) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if f, ok := a.snap.Foreign[td]; ok {
		return f.X509Bundle(td), nil
	}
	if a.snap.Bundle == nil {
		return nil, errors.New("proxy: no trust bundle loaded")
	}
	return a.snap.Bundle.X509Bundle(td), nil
}

// verifyPeer verifies a peer's chain against the bundle of the trust
// domain it names (source: ours or a federated one's) and says whether it
// is of a federated trust domain.
func verifyPeer(certs []*x509.Certificate, snap *state.Snapshot, source x509bundle.Source, now time.Time) (spiffeid.ID, bool, error) {
	id, _, err := x509svid.Verify(certs, source, x509svid.WithTime(now))
	if err != nil {
		return id, false, err
	}
	_, foreign := snap.Foreign[id.TrustDomain()]
	return id, foreign, nil
}

// serverTLS is the inbound TLS configuration of listen port n: TLS 1.3,
// the workload certificate, and a peer check against the bundle and the
// policy in force at the moment of each handshake.
func (p *Proxy) serverTLS(n int) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		Time:           p.cfg.Clock.Now,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.certificate() },
		ClientAuth:     tls.RequestClientCert, // verified below, by policy
		// No session tickets: meshid-proxy clients never resume (each
		// connection is verified against the bundle in force), so a ticket
		// would only cost an encryption of the peer's chain per handshake.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			port := p.policy.Load().For(n)
			if len(cs.PeerCertificates) == 0 {
				if port.Mode == policy.AllUnauthenticated {
					return nil
				}
				return &refusal{reason: reasonNoCertificate, err: fmt.Errorf("proxy: port %d (mode %s) requires a client certificate and none was sent", n, port.Mode)}
			}
			snap := p.store.Load()
			var source x509bundle.Source = snap.Bundles()
			if port.Mode.AcceptsEveryPeer() {
				source = anyTrustDomain{snap}
			}
			if source == (*x509bundle.Set)(nil) {
				return &refusal{reason: reasonUntrusted, err: errors.New("proxy: no trust bundle loaded")}
			}
			id, foreign, err := verifyPeer(cs.PeerCertificates, snap, source, p.cfg.Clock.Now())
			if err != nil {
				return &refusal{reason: reasonUntrusted, err: fmt.Errorf("proxy: the client certificate does not verify against the bundle of its trust domain: %w", err)}
			}
			authorize := port.Authorize
			if foreign {
				authorize = port.AuthorizeForeign
			}
			if err := authorize(id); err != nil {
				return &refusal{reason: reasonDenied, peer: id, err: err}
			}
			return nil
		},
	}
}

// clientTLS is the outbound TLS configuration: TLS 1.3, the workload
// certificate, and a check that the server is want (or, when want is zero,
// any identity of the proxy's trust domain).
func (p *Proxy) clientTLS(want spiffeid.ID) *tls.Config {
	td := p.store.TrustDomain()
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		Time:                 p.cfg.Clock.Now,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return p.certificate() },
		// Offered to every server: a transparent inbound listener takes a
		// ClientHello with it for meshid mTLS (an explicit one ignores it).
		NextProtos: []string{ALPN},
		// Servers are identified by SPIFFE ID, not host name: crypto/tls's
		// own check is replaced by VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, _, err := x509svid.Verify(cs.PeerCertificates, p.store, x509svid.WithTime(p.cfg.Clock.Now()))
			if err != nil {
				return &refusal{reason: reasonUntrusted, err: fmt.Errorf("proxy: the server certificate does not verify against the bundle of its trust domain: %w", err)}
			}
			switch {
			case !want.IsZero() && id != want:
				return &refusal{reason: reasonWrongServer, peer: id, err: fmt.Errorf("proxy: the server is %s, want %s", id, want)}
			case want.IsZero() && !id.MemberOf(td):
				return &refusal{reason: reasonWrongServer, peer: id, err: fmt.Errorf("proxy: the server is %s, outside trust domain %s", id, td)}
			}
			return nil
		},
	}
}
