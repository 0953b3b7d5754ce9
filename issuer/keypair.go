package issuer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshid/meshid/bundle"
)

// ErrInvalid is wrapped by every error Parse and Verify return: the material
// must not be used.
var ErrInvalid = errors.New("issuer: invalid issuer")

// Verify also wraps one of these, so callers can tell a wait from a fault.
var (
	// ErrUntrusted: the issuer does not chain to an anchor of the bundle.
	ErrUntrusted = errors.New("does not chain to the trust bundle")
	// ErrNotYetValid: the issuer's NotBefore is in the future.
	ErrNotYetValid = errors.New("not valid yet")
	// ErrExpired: the issuer's NotAfter has passed.
	ErrExpired = errors.New("expired")
)

// KeyPair is a CA certificate with its private key: the local Signer.
// It is immutable once made.
type KeyPair struct {
	// Cert is the issuing certificate.
	Cert *x509.Certificate
	// Chain holds the certificates above Cert, up to but not including a
	// self-signed anchor, Cert's issuer first. Leaves ship Cert + Chain.
	Chain []*x509.Certificate
	// Key is Cert's private key.
	Key crypto.Signer

	fingerprint string
	notAfter    time.Time // the earliest NotAfter of Cert and Chain
}

// Parse reads a PEM certificate chain (the issuing certificate first, as in
// a kubernetes.io/tls Secret's tls.crt) and its PEM private key (PKCS#8,
// PKCS#1 or SEC 1), and checks that the certificate is a CA allowed to sign
// certificates and that the key matches it. It does not check validity in
// time or the chain to an anchor: that is Verify.
func Parse(certPEM, keyPEM []byte) (*KeyPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, keyPairError(err))
	}
	certs := make([]*x509.Certificate, 0, len(pair.Certificate))
	for i, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrInvalid, i+1, err)
		}
		certs = append(certs, c)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: the private key cannot sign", ErrInvalid)
	}
	return newKeyPair(certs[0], certs[1:], signer)
}

func keyPairError(err error) error {
	// crypto/tls says "tls: ..."; say what the operator should look at.
	msg := err.Error()
	switch {
	case bytes.Contains([]byte(msg), []byte("private key does not match")):
		return errors.New("the private key does not match the certificate (tls.key must belong to the first certificate of tls.crt)")
	case bytes.Contains([]byte(msg), []byte("failed to find any PEM data in certificate")):
		return errors.New("no PEM CERTIFICATE block in the certificate data (tls.crt)")
	case bytes.Contains([]byte(msg), []byte("failed to find any PEM data in key")),
		bytes.Contains([]byte(msg), []byte("failed to find PEM block with type ending in")):
		return errors.New("no PEM private key block in the key data (tls.key)")
	}
	return err
}

func newKeyPair(cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) (*KeyPair, error) {
	if err := bundle.CheckCA(cert); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, cert.Subject, err)
	}
	switch key.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrInvalid, key.Public())
	}
	// Drop a trailing self-signed anchor: peers have it in their bundle.
	for len(chain) > 0 && isSelfSigned(chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	notAfter := cert.NotAfter
	for _, c := range chain {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return &KeyPair{Cert: cert, Chain: chain, Key: key, fingerprint: bundle.Fingerprint(cert), notAfter: notAfter}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// Certificates returns Cert followed by Chain: what leaves ship after
// themselves.
func (kp *KeyPair) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate{kp.Cert}, kp.Chain...)
}

// NotAfter returns the earliest NotAfter of Cert and Chain: no leaf it
// signs outlives it.
func (kp *KeyPair) NotAfter() time.Time { return kp.notAfter }

// Fingerprint returns the hex SHA-256 of the issuing certificate.
func (kp *KeyPair) Fingerprint() string { return kp.fingerprint }

// CheckValidity checks that the issuing certificate is inside its validity
// at now.
func (kp *KeyPair) CheckValidity(now time.Time) error {
	switch {
	case now.Before(kp.Cert.NotBefore):
		return fmt.Errorf("%w: %s is %w: it starts at %s (check the clocks)", ErrInvalid, kp.Cert.Subject, ErrNotYetValid, kp.Cert.NotBefore.UTC().Format(time.RFC3339))
	case now.After(kp.notAfter):
		return fmt.Errorf("%w: %s has %w: its chain ends at %s", ErrInvalid, kp.Cert.Subject, ErrExpired, kp.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Verify checks that the issuing certificate is inside its validity at now
// and chains to an anchor of b through kp.Chain.
func (kp *KeyPair) Verify(b *bundle.Bundle, now time.Time) error {
	_, err := kp.ChainExpiry(b, now)
	return err
}

// ChainExpiry verifies like Verify and returns the earliest NotAfter along
// the verified chain, anchor included: when it passes, leaves signed by kp
// stop verifying.
func (kp *KeyPair) ChainExpiry(b *bundle.Bundle, now time.Time) (time.Time, error) {
	if err := kp.CheckValidity(now); err != nil {
		return time.Time{}, err
	}
	if b == nil {
		return time.Time{}, fmt.Errorf("%w: no trust bundle is loaded to verify it against", ErrInvalid)
	}
	inter := x509.NewCertPool()
	for _, c := range kp.Chain {
		inter.AddCert(c)
	}
	var expiry time.Time
	// Leaves are used for both server and client auth: the chain must allow
	// each (crypto/x509 accepts a chain that allows any one listed usage).
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		chains, err := kp.Cert.Verify(x509.VerifyOptions{
			Roots:         b.Pool(),
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: %s %w %.12s: %w", ErrInvalid, kp.Cert.Subject, ErrUntrusted, b.SHA256(), err)
		}
		for _, c := range chains[0] {
			if expiry.IsZero() || c.NotAfter.Before(expiry) {
				expiry = c.NotAfter
			}
		}
	}
	return expiry, nil
}

// Sign signs a leaf. It implements Signer.
func (kp *KeyPair) Sign(_ context.Context, p LeafParams) (*Issued, error) {
	if p.Template == nil || p.PublicKey == nil {
		return nil, errors.New("issuer: Sign needs a template and a public key")
	}
	tmpl := *p.Template
	if tmpl.NotAfter.After(kp.notAfter) {
		tmpl.NotAfter = kp.notAfter
	}
	if !tmpl.NotAfter.After(tmpl.NotBefore) {
		return nil, fmt.Errorf("issuer: %s (or its chain) expires at %s, too soon to sign a leaf", kp.Cert.Subject, kp.notAfter.UTC().Format(time.RFC3339))
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, kp.Cert, p.PublicKey, kp.Key)
	if err != nil {
		return nil, fmt.Errorf("issuer: sign leaf: %w", err)
	}
	return &Issued{
		DER:           der,
		Intermediates: kp.Certificates(),
		Serial:        tmpl.SerialNumber,
		// As encoded: X.509 times have whole seconds.
		NotAfter:          tmpl.NotAfter.UTC().Truncate(time.Second),
		IssuerFingerprint: kp.fingerprint,
	}, nil
}
