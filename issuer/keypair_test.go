package issuer_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

var id = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")

func TestParse(t *testing.T) {
	anchor := issuertest.Anchor(t)
	iss := issuertest.Intermediate(t, anchor, issuertest.PathLenZero())
	// A leaf signed by the issuer: not a CA.
	leaf := issuertest.Leaf(t, iss, id)

	tests := []struct {
		name      string
		cert, key []byte
		ok        bool
	}{
		{name: "issuer with its anchor appended", cert: append(iss.CertPEM(), anchor.CertPEM()...), key: issuertest.KeyPEM(t, iss.Key), ok: true},
		{name: "no certificate", cert: nil, key: issuertest.KeyPEM(t, iss.Key)},
		{name: "key of another CA", cert: iss.CertPEM(), key: issuertest.KeyPEM(t, anchor.Key)},
		{name: "leaf certificate", cert: bundle.Encode([]*x509.Certificate{leaf.Cert}), key: leaf.KeyPEM(t)},
		{name: "garbage", cert: []byte("garbage"), key: []byte("garbage")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, err := issuer.Parse(tt.cert, tt.key)
			if !tt.ok {
				if !errors.Is(err, issuer.ErrInvalid) {
					t.Fatalf("Parse = %v; want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(kp.Chain) != 0 {
				t.Fatalf("chain holds %d certificates; the self-signed anchor must be dropped", len(kp.Chain))
			}
		})
	}
}

func TestVerify(t *testing.T) {
	now := time.Now()
	anchor, other := issuertest.Anchor(t, issuertest.Name("anchor")), issuertest.Anchor(t, issuertest.Name("other"))
	iss := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now))
	b, _ := bundle.New(anchor.Cert)
	wrong, _ := bundle.New(other.Cert)
	if err := iss.Verify(b, now); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"unknown anchor": iss.Verify(wrong, now),
		"expired":        iss.Verify(b, now.Add(49*time.Hour)),
		"not yet valid":  iss.Verify(b, now.Add(-time.Hour)),
		"no bundle":      iss.Verify(nil, now),
	} {
		if !errors.Is(err, issuer.ErrInvalid) {
			t.Errorf("%s: Verify = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSignCapsNotAfter(t *testing.T) {
	anchor := issuertest.Anchor(t)
	iss := issuertest.Intermediate(t, anchor, issuertest.TTL(time.Hour))
	key := issuertest.Leaf(t, iss, id).Key // any key
	out, err := iss.Sign(context.Background(), issuer.LeafParams{ID: id, PublicKey: key.Public(), Now: time.Now(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !out.NotAfter.Equal(iss.Cert.NotAfter) || !mustParse(t, out.DER).NotAfter.Equal(out.NotAfter) {
		t.Fatalf("leaf NotAfter %s, want the issuer's %s", out.NotAfter, iss.Cert.NotAfter)
	}
	if out.IssuerFingerprint != iss.Fingerprint() || !out.Intermediates[0].Equal(iss.Cert) {
		t.Fatal("Issued does not name its issuer")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
