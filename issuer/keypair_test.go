package issuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

func mustAnchor(t *testing.T, name string) *issuer.KeyPair {
	t.Helper()
	kp, err := issuer.NewAnchor(issuer.CAParams{CommonName: name, TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func keyPEM(t *testing.T, kp *issuer.KeyPair) []byte {
	t.Helper()
	b, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	anchor := mustAnchor(t, "anchor")
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", TTL: 48 * time.Hour, MaxPathLenZero: true})
	if err != nil {
		t.Fatal(err)
	}
	// A leaf signed by the issuer: not a CA.
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "leaf"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	leafOut, err := iss.Sign(context.Background(), issuer.LeafParams{Template: leafTmpl, PublicKey: leafKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	leafKeyPEM, _ := (&issuer.KeyPair{Key: leafKey}).KeyPEM()

	tests := []struct {
		name      string
		cert, key []byte
		ok        bool
	}{
		{name: "issuer with its anchor appended", cert: append(iss.CertPEM(), anchor.CertPEM()...), key: keyPEM(t, iss), ok: true},
		{name: "no certificate", cert: nil, key: keyPEM(t, iss)},
		{name: "key of another CA", cert: iss.CertPEM(), key: keyPEM(t, anchor)},
		{name: "leaf certificate", cert: bundle.Encode([]*x509.Certificate{mustParse(t, leafOut.DER)}), key: leafKeyPEM},
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
	anchor, other := mustAnchor(t, "anchor"), mustAnchor(t, "other")
	iss, _ := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", TTL: 48 * time.Hour})
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
	anchor := mustAnchor(t, "anchor")
	iss, _ := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", TTL: time.Hour})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://cluster.local/ns/a/sa/b")
	out, err := iss.Sign(context.Background(), issuer.LeafParams{PublicKey: key.Public(), Template: &x509.Certificate{
		SerialNumber: big.NewInt(1), URIs: []*url.URL{u}, NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour),
	}})
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
