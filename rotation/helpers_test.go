package rotation_test

import (
	"context"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
)

func newIssuer(t *testing.T) *issuer.KeyPair {
	t.Helper()
	anchor, err := issuer.NewAnchor(issuer.CAParams{CommonName: "anchor", NotBefore: time.Now().Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", NotBefore: time.Now().Add(-time.Hour), TTL: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// signCSR answers a CSR as the CA would, for spiffe://cluster.local/ns/a/sa/web.
func signCSR(ctx context.Context, iss *issuer.KeyPair, der []byte, now time.Time, ttl time.Duration) (*identityv1.CertifyResponse, error) {
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	serial, _ := issuer.NewSerial()
	id, _ := url.Parse("spiffe://cluster.local/ns/a/sa/web")
	out, err := iss.Sign(ctx, issuer.LeafParams{PublicKey: req.PublicKey, Template: &x509.Certificate{
		SerialNumber: serial, URIs: []*url.URL{id}, NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(ttl), // backdated as the CA does
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}})
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
