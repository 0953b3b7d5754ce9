package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/issuer"
)

// leafParams describes a workload leaf.
type leafParams struct {
	ID spiffeid.ID
	// PublicKey is the key the leaf certifies; its SubjectKeyIdentifier is
	// derived from it. Required.
	PublicKey crypto.PublicKey
	Now       time.Time
	TTL       time.Duration
	Backdate  time.Duration
	// DNSNames are extra names; only the CA's own serving certificate has any.
	DNSNames []string
}

// leafTemplate builds an X.509-SVID template: one URI SAN, a random 128-bit
// serial, digital-signature key usage, server and client auth, NotBefore
// backdated for clock skew, and a SubjectKeyIdentifier (RFC 5280 4.2.1.2:
// crypto/x509 derives one only for CA certificates). Nothing comes from the
// caller's CSR but the key.
func leafTemplate(p leafParams) (*x509.Certificate, error) {
	serial, err := issuer.NewSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	ski, err := subjectKeyID(p.PublicKey)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}},
		URIs:                  []*url.URL{p.ID.URL()},
		DNSNames:              p.DNSNames,
		NotBefore:             p.Now.Add(-p.Backdate),
		NotAfter:              p.Now.Add(p.TTL),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
	}, nil
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bits (RFC 7093 section 2, method 1), as crypto/x509
// derives it for CAs.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: leaf public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("ca: leaf public key: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}
