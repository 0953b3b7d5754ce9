package pkitest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

// CA makes a CA valid from notBefore for ttl: an anchor when parent is nil,
// else an intermediate signed by parent.
func CA(t testing.TB, parent *issuer.KeyPair, name string, notBefore time.Time, ttl time.Duration) *issuer.KeyPair {
	t.Helper()
	p := issuer.CAParams{CommonName: name, NotBefore: notBefore, TTL: ttl}
	var kp *issuer.KeyPair
	var err error
	if parent == nil {
		kp, err = issuer.NewAnchor(p)
	} else {
		p.MaxPathLenZero = true
		kp, err = parent.NewIntermediate(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// Leaf signs a workload certificate for id with iss, valid from notBefore
// for ttl (capped at iss's expiry), and returns its chain (leaf, then iss
// and its chain) and key.
func Leaf(t testing.TB, iss *issuer.KeyPair, id spiffeid.ID, notBefore time.Time, ttl time.Duration) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := issuer.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.String())
	issued, err := iss.Sign(context.Background(), issuer.LeafParams{PublicKey: key.Public(), Template: &x509.Certificate{
		SerialNumber: serial, NotBefore: notBefore, NotAfter: notBefore.Add(ttl), URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := issued.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return append([]*x509.Certificate{leaf}, issued.Intermediates...), key
}

// PEM encodes certificates, in order.
func PEM(certs ...*x509.Certificate) []byte { return bundle.Encode(certs) }

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// File writes data to name in a directory of the test's, and returns its
// path.
func File(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
