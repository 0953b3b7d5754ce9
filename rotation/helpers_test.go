package rotation_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

func newIssuer(t *testing.T) *issuer.KeyPair {
	t.Helper()
	anchor := issuertest.Anchor(t, issuertest.NotBefore(time.Now().Add(-time.Hour)))
	return issuertest.Intermediate(t, anchor, issuertest.NotBefore(time.Now().Add(-time.Hour)), issuertest.TTL(30*24*time.Hour))
}

// signCSR answers a CSR as the CA would, for spiffe://cluster.local/ns/a/sa/web.
func signCSR(ctx context.Context, iss *issuer.KeyPair, der []byte, now time.Time, ttl time.Duration) (*identityv1.CertifyResponse, error) {
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/web")
	out, err := iss.Sign(ctx, issuer.LeafParams{
		ID: id, PublicKey: req.PublicKey, Now: now, TTL: ttl,
		Backdate: 5 * time.Minute, // as the CA does
	})
	if err != nil {
		return nil, err
	}
	resp := &identityv1.CertifyResponse{
		Leaf: out.DER, SpiffeId: id.String(),
		ValidUntil: timestamppb.New(out.NotAfter), RenewAfter: timestamppb.New(issuer.RenewAt(now, out.NotAfter, 0.5)),
		ServerTime: timestamppb.New(now),
	}
	for _, c := range out.Intermediates {
		resp.Intermediates = append(resp.Intermediates, c.Raw)
	}
	return resp, nil
}
