package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

// CA makes a CA valid from notBefore for ttl: an anchor when parent is nil,
// else an intermediate signed by parent, with path length zero.
func CA(t testing.TB, parent *issuer.KeyPair, name string, notBefore time.Time, ttl time.Duration) *issuer.KeyPair {
	t.Helper()
	opts := []issuertest.Option{issuertest.Name(name), issuertest.NotBefore(notBefore), issuertest.TTL(ttl)}
	if parent == nil {
		return issuertest.Anchor(t, opts...)
	}
	return issuertest.Intermediate(t, parent, append(opts, issuertest.PathLenZero())...)
}

// Leaf signs a workload certificate for id with iss, valid from notBefore
// for ttl (capped at iss's expiry), and returns its chain (leaf, then iss
// and its chain) and key. Its subject is empty, unlike meshid-ca's leaves
// (issuertest.Leaf): the CLI's tests print it.
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
	issued, err := iss.SignTemplate(&x509.Certificate{
		SerialNumber: serial, NotBefore: notBefore, NotAfter: notBefore.Add(ttl), URIs: []*url.URL{id.URL()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, key.Public())
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
	return issuertest.KeyPEM(t, key)
}

// File writes data to name in a directory of the test's, and returns its
// path.
func File(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	return issuertest.WriteFile(t, dir, name, data)
}
