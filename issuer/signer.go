package issuer

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// Signer is the seam between the CA and whatever holds its signing key: a
// local key pair (KeyPair, whose crypto.Signer may be an HSM or KMS key),
// an intermediate signed by an upstream authority, or a remote signer.
// The CA builds no certificate itself; it describes the leaf (LeafParams)
// and a Signer makes it. The trust store checks a Signer only through
// Certificate and UpstreamChain (Verify, ChainExpiry, CheckValidity), so
// every implementation is held to the same rules.
type Signer interface {
	// Sign signs the X.509-SVID p describes and returns it with the chain
	// it ships with. It caps the leaf's NotAfter at its own lifetime (the
	// earliest NotAfter of Certificate and UpstreamChain) and at
	// p.MaxNotAfter, and refuses when that leaves no lifetime.
	Sign(ctx context.Context, p LeafParams) (*Issued, error)
	// Certificate returns the issuing certificate: the issuer of every
	// leaf Sign returns. It never changes.
	Certificate() *x509.Certificate
	// UpstreamChain returns the certificates above Certificate, its issuer
	// first, up to but not including a self-signed anchor; empty when an
	// anchor signed Certificate. It never changes; callers must not modify
	// it.
	UpstreamChain() []*x509.Certificate
}

// LeafParams describes one leaf X.509-SVID to sign. The signer adds the
// rest of the leaf (LeafTemplate): nothing comes from a caller's CSR but
// PublicKey.
type LeafParams struct {
	// ID is the leaf's SPIFFE ID, its one URI SAN. Required.
	ID spiffeid.ID
	// PublicKey is the key the leaf certifies, taken from a checked CSR.
	// Required.
	PublicKey crypto.PublicKey
	// Now is the time the leaf is signed at, from the caller's clock: the
	// leaf is valid from Now minus Backdate to Now plus TTL. Required.
	Now time.Time
	// TTL is the leaf's lifetime from Now, before the caps (see
	// Signer.Sign). Required: above zero.
	TTL time.Duration
	// Backdate is how far before Now the leaf's NotBefore is set, so that
	// peers whose clocks run behind accept it; zero means not backdated.
	Backdate time.Duration
	// MaxNotAfter, when not zero, caps the leaf's NotAfter below the
	// signer's own lifetime: the CA passes when the issuer's verified chain,
	// anchor included, expires, which UpstreamChain does not show.
	MaxNotAfter time.Time
	// DNSNames are DNS SANs beside ID; nil for workloads. Only the CA's
	// own serving certificate has any.
	DNSNames []string
}

// Issued is a signed leaf and the chain that goes with it.
type Issued struct {
	// DER is the signed certificate. It is not parsed again: the CA sends it
	// as it is, and crypto/x509 has already verified its signature.
	DER []byte
	// Intermediates lead from Leaf's issuer towards an anchor, issuer first,
	// anchors excluded: the signer's Certificate, then its UpstreamChain.
	Intermediates []*x509.Certificate
	// Serial and NotAfter repeat the leaf's, for callers that log them.
	Serial   *big.Int
	NotAfter time.Time
	// IssuerFingerprint is the hex SHA-256 of the issuing certificate.
	IssuerFingerprint string
}

// Certificate parses DER, for the callers that need the leaf's fields.
func (i *Issued) Certificate() (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(i.DER)
	if err != nil {
		return nil, fmt.Errorf("issuer: parse signed leaf: %w", err)
	}
	return c, nil
}

// LeafTemplate builds the X.509-SVID template for a leaf s signs: one URI
// SAN (p.ID), a random 128-bit serial, digital-signature key usage, server
// and client auth, CA:FALSE, a SubjectKeyIdentifier (RFC 5280 4.2.1.2:
// crypto/x509 derives one only for CAs), NotBefore p.Now - p.Backdate,
// NotAfter p.Now + p.TTL capped at p.MaxNotAfter and at s's own lifetime
// (NotAfter). Every Signer builds its leaves with it, so they all follow
// these rules. Nothing comes from a caller's CSR but the key.
func LeafTemplate(p LeafParams, s Signer) (*x509.Certificate, error) {
	switch {
	case p.ID.IsZero():
		return nil, errors.New("issuer: LeafParams.ID is required")
	case p.PublicKey == nil:
		return nil, errors.New("issuer: LeafParams.PublicKey is required")
	case p.Now.IsZero():
		return nil, errors.New("issuer: LeafParams.Now is required")
	case p.TTL <= 0:
		return nil, fmt.Errorf("issuer: LeafParams.TTL must be above zero, not %s", p.TTL)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(p.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
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
	}
	limit := NotAfter(s)
	if !p.MaxNotAfter.IsZero() && p.MaxNotAfter.Before(limit) {
		limit = p.MaxNotAfter
	}
	if err := capValidity(tmpl, s.Certificate(), limit); err != nil {
		return nil, err
	}
	return tmpl, nil
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bits (RFC 7093 section 2, method 1), as crypto/x509
// derives it for CAs.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("issuer: leaf public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("issuer: leaf public key: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

// capValidity caps tmpl.NotAfter at notAfter, the end of the lifetime of
// its issuer cert (and of the chain above it), and refuses a template left
// with no lifetime.
func capValidity(tmpl *x509.Certificate, cert *x509.Certificate, notAfter time.Time) error {
	if tmpl.NotAfter.After(notAfter) {
		tmpl.NotAfter = notAfter
	}
	if !tmpl.NotAfter.After(tmpl.NotBefore) {
		return fmt.Errorf("issuer: %s (or its chain) expires at %s, too soon to sign a leaf", cert.Subject, notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// NotAfter returns when s stops signing: the earliest NotAfter of its
// Certificate and UpstreamChain. No leaf it signs outlives it.
func NotAfter(s Signer) time.Time {
	return earliestNotAfter(s.Certificate(), s.UpstreamChain())
}

func earliestNotAfter(cert *x509.Certificate, chain []*x509.Certificate) time.Time {
	t := cert.NotAfter
	for _, c := range chain {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// Fingerprint returns the hex SHA-256 of s's issuing certificate: how the
// CA, the bundle stream and the fleet report name an issuer.
func Fingerprint(s Signer) string { return bundle.Fingerprint(s.Certificate()) }
