package upstream

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// Authority is an upstream certificate authority: it signs a CA
// certificate for the key of a CSR. Implementations only carry the request
// and the answer; Check decides whether the answer may be used.
type Authority interface {
	// Sign asks for a CA certificate for req. It returns the upstream's
	// answer as it came, unchecked, or why it could not get one.
	Sign(ctx context.Context, req Request) (*Answer, error)
	// Describe names the upstream for logs, Events and `meshid check`
	// (say, "step-ca https://ca.example:9000 provisioner meshid").
	Describe() string
}

// Request is one request for an intermediate.
type Request struct {
	// CSR is the DER certificate request, signed by the new key.
	CSR []byte
	// Subject is the CSR's subject, for upstreams that need it apart.
	Subject pkix.Name
	// TTL is the lifetime asked for; the upstream may give less.
	TTL time.Duration
}

// Answer is what an upstream returned for a Request.
type Answer struct {
	// Certificate is the new intermediate.
	Certificate *x509.Certificate
	// Chain leads from Certificate's issuer towards Roots, issuer first,
	// roots excluded.
	Chain []*x509.Certificate
	// Roots are the upstream's roots: the bundle must carry one of them.
	Roots []*x509.Certificate
}

// ErrRefused is wrapped by every error of Check: the answer must not be
// used.
var ErrRefused = errors.New("upstream: refused the upstream's answer")

// Check verifies an answer before it is used: a CA certificate allowed to
// sign certificates, for pub (the key meshid-ca holds), valid at now with
// at least minLife left, that chains through Chain to one of Roots.
func Check(a *Answer, pub crypto.PublicKey, now time.Time, minLife time.Duration) error {
	switch {
	case a == nil || a.Certificate == nil:
		return fmt.Errorf("%w: it holds no certificate", ErrRefused)
	case len(a.Roots) == 0:
		return fmt.Errorf("%w: it names no root to verify the certificate against", ErrRefused)
	}
	c := a.Certificate
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("%w: %s is not a CA (CA:FALSE): the provisioner's template must make an intermediate (see docs/ca.md, Upstream authorities)", ErrRefused, c.Subject)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %s may not sign certificates (no keyCertSign key usage)", ErrRefused, c.Subject)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(c.PublicKey) {
		return fmt.Errorf("%w: %s certifies another key than the one meshid-ca asked for", ErrRefused, c.Subject)
	}
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("%w: %s is not valid until %s (check the clocks)", ErrRefused, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	case !now.Add(minLife).Before(c.NotAfter):
		return fmt.Errorf("%w: %s expires at %s, less than %s from now", ErrRefused, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), minLife)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range a.Roots {
		roots.AddCert(r)
	}
	for _, i := range a.Chain {
		inter.AddCert(i)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%w: %s does not chain to the upstream's root: %w", ErrRefused, c.Subject, err)
	}
	return nil
}

// KeySource makes the key of each new intermediate. It returns the key and
// where it lives ("memory", "pkcs11:...") for `meshid check`.
type KeySource interface {
	NewKey(ctx context.Context) (crypto.Signer, error)
	Location() string
}

// MemoryKeys makes ECDSA P-256 keys held in memory only: never written to
// disk or etcd.
type MemoryKeys struct{}

// NewKey implements KeySource.
func (MemoryKeys) NewKey(context.Context) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("upstream: generate the intermediate's key: %w", err)
	}
	return k, nil
}

// Location implements KeySource.
func (MemoryKeys) Location() string { return "memory" }

// StaticKey is one key for every intermediate: a key in an HSM, which
// meshid-ca cannot create itself (--issuer-key pkcs11:...). Each renewal
// certifies the same key again; only the certificate rotates.
type StaticKey struct {
	Key crypto.Signer
	// Where the key lives, for `meshid check` ("pkcs11").
	Where string
}

// NewKey implements KeySource.
func (k StaticKey) NewKey(context.Context) (crypto.Signer, error) {
	if k.Key == nil {
		return nil, errors.New("upstream: no key to certify")
	}
	return k.Key, nil
}

// Location implements KeySource.
func (k StaticKey) Location() string { return k.Where }

// NewRequest makes the CSR for key with subject, asking for ttl.
func NewRequest(key crypto.Signer, subject pkix.Name, ttl time.Duration) (Request, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		return Request{}, fmt.Errorf("upstream: make the CSR: %w", err)
	}
	return Request{CSR: der, Subject: subject, TTL: ttl}, nil
}
