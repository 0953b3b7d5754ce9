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
	"encoding/pem"
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
// Key is any crypto.Signer, so it may be held in memory or by an HSM or
// KMS. It is immutable once made.
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

// ParseWithKey reads a PEM certificate chain (the issuing certificate
// first) whose private key is key, held elsewhere (an HSM: issuer/keys),
// and checks what Parse checks: a CA allowed to sign certificates, and its
// public key the one of key.
func ParseWithKey(certPEM []byte, key crypto.Signer) (*KeyPair, error) {
	var certs []*x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrInvalid, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block in the certificate data (tls.crt)", ErrInvalid)
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: the issuer certificate %s is not for the issuer key (its public key differs): issue the issuer certificate for that key's public key", ErrInvalid, certs[0].Subject)
	}
	return newKeyPair(certs[0], certs[1:], key)
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
	return &KeyPair{Cert: cert, Chain: chain, Key: key, fingerprint: bundle.Fingerprint(cert), notAfter: earliestNotAfter(cert, chain)}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// Certificate returns the issuing certificate. It implements Signer.
func (kp *KeyPair) Certificate() *x509.Certificate { return kp.Cert }

// UpstreamChain returns Chain. It implements Signer.
func (kp *KeyPair) UpstreamChain() []*x509.Certificate { return kp.Chain }

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

// CheckValidity is CheckValidity(kp, now).
func (kp *KeyPair) CheckValidity(now time.Time) error { return CheckValidity(kp, now) }

// Verify is Verify(kp, b, now).
func (kp *KeyPair) Verify(b *bundle.Bundle, now time.Time) error { return Verify(kp, b, now) }

// ChainExpiry is ChainExpiry(kp, b, now).
func (kp *KeyPair) ChainExpiry(b *bundle.Bundle, now time.Time) (time.Time, error) {
	return ChainExpiry(kp, b, now)
}

// Sign signs the leaf p describes (LeafTemplate) with Key. It implements
// Signer.
func (kp *KeyPair) Sign(_ context.Context, p LeafParams) (*Issued, error) {
	tmpl, err := LeafTemplate(p, kp)
	if err != nil {
		return nil, err
	}
	return kp.sign(tmpl, p.PublicKey)
}

// SignTemplate signs a certificate for pub from tmpl, which it does not
// modify, with NotAfter capped at kp's lifetime: for certificates that are
// not X.509-SVIDs, such as meshid-webhook's serving certificate. Leaves
// for workloads go through Sign.
func (kp *KeyPair) SignTemplate(tmpl *x509.Certificate, pub crypto.PublicKey) (*Issued, error) {
	if tmpl == nil || pub == nil {
		return nil, errors.New("issuer: SignTemplate needs a template and a public key")
	}
	t := *tmpl
	if err := capValidity(&t, kp.Cert, kp.notAfter); err != nil {
		return nil, err
	}
	return kp.sign(&t, pub)
}

func (kp *KeyPair) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*Issued, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, kp.Cert, pub, kp.Key)
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

// NewKeyPair makes a KeyPair from a parsed CA certificate, the chain above
// it (its issuer first; a trailing self-signed anchor is dropped) and its
// private key, with the checks Parse makes: a CA allowed to sign
// certificates, a supported key that matches the certificate. For key
// sources that are not PEM (an upstream-signed intermediate, an HSM key).
func NewKeyPair(cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) (*KeyPair, error) {
	if cert == nil || key == nil {
		return nil, fmt.Errorf("%w: a certificate and its key are required", ErrInvalid)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the private key does not match the certificate %s", ErrInvalid, cert.Subject)
	}
	return newKeyPair(cert, chain, key)
}
