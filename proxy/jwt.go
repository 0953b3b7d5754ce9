package proxy

import (
	"context"
	"crypto/tls"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/proxy/workload"
	"github.com/meshid/meshid/rotation"
)

// jwtMinter asks the CA for JWT-SVIDs over a connection that presents the
// proxy's certificate (made again when the certificate changes, as a TLS
// connection keeps the identity it was opened with): the CA mints for the
// identity that certificate proves, with no second token review.
type jwtMinter struct {
	p *Proxy

	mu      sync.Mutex
	conn    *grpc.ClientConn
	connFor *tls.Certificate
}

func (m *jwtMinter) mint(ctx context.Context, aud []string) (string, error) {
	cert := m.p.store.Load().Certificate()
	if cert == nil {
		return "", status.Error(codes.Unavailable, "the proxy has no certificate yet")
	}
	m.mu.Lock()
	if cert != m.connFor {
		if m.conn != nil {
			m.conn.Close()
		}
		conn, err := rotation.DialCA(m.p.cfg.CA, m.p.store, m.p.cfg.CAID, rotation.WithClientCertificate(cert))
		if err != nil {
			m.conn, m.connFor = nil, nil
			m.mu.Unlock()
			return "", status.Errorf(codes.Unavailable, "dial the CA: %v", err)
		}
		m.conn, m.connFor = conn, cert
	}
	conn := m.conn
	m.mu.Unlock()
	resp, err := identityv1.NewIdentityClient(conn).MintJWTSVID(ctx, &identityv1.MintJWTSVIDRequest{Audience: aud})
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}

func (m *jwtMinter) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		m.conn.Close()
		m.conn, m.connFor = nil, nil
	}
}

// enableJWT turns on the Workload API's JWT calls with their metrics.
func (p *Proxy) enableJWT(s *workload.Server, m *jwtMinter) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshid_proxy_workload_api_refused_total",
		Help: "Workload API JWT calls refused, by call (FetchJWTSVID, ValidateJWTSVID) and reason.",
	}, []string{"call", "reason"})
	for _, r := range []string{workload.ReasonAudienceMissing, workload.ReasonAudienceInvalid, workload.ReasonSubjectMismatch, workload.ReasonNoSVID, workload.ReasonMintFailed} {
		refused.WithLabelValues(workload.CallFetchJWTSVID, r)
	}
	for _, r := range []string{workload.ReasonAudienceMissing, workload.ReasonNoJWTBundle, workload.ReasonInvalidToken} {
		refused.WithLabelValues(workload.CallValidateJWTSVID, r)
	}
	served := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshid_proxy_jwt_svids_total",
		Help: "JWT-SVIDs handed out on the Workload API, by source (cache, ca).",
	}, []string{"source"})
	served.WithLabelValues("cache")
	served.WithLabelValues("ca")
	p.metrics.registry.MustRegister(refused, served)
	s.EnableJWT(workload.JWTConfig{
		Mint:    m.mint,
		Refused: func(call, reason string) { refused.WithLabelValues(call, reason).Inc() },
		Minted: func(cached bool) {
			if cached {
				served.WithLabelValues("cache").Inc()
			} else {
				served.WithLabelValues("ca").Inc()
			}
		},
		Clock: p.cfg.Clock,
	})
}

// setJWTBundle installs the CA's JWKS, or refuses it and keeps the last
// good one.
func (p *Proxy) setJWTBundle(jwks []byte) {
	if len(jwks) == 0 {
		return // the CA mints no JWT-SVIDs
	}
	changed, err := p.store.SetJWTBundle(jwks)
	switch {
	case err != nil:
		p.metrics.bundles.WithLabelValues("ca_jwt", "refused").Inc()
		p.log.Error("refused the CA's JWT bundle; keeping the last good one in force", "error", err)
	case changed:
		p.metrics.bundles.WithLabelValues("ca_jwt", "ok").Inc()
		p.log.Info("JWT bundle loaded", "keys", len(p.store.Load().JWTBundle.JWTAuthorities()))
	}
}
