package issuer

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshid/meshid/bundle"
)

// CheckValidity checks that s's issuing certificate is inside its validity
// at now, and that no certificate of its UpstreamChain has expired.
func CheckValidity(s Signer, now time.Time) error {
	cert, notAfter := s.Certificate(), NotAfter(s)
	switch {
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: %s is %w: it starts at %s (check the clocks)", ErrInvalid, cert.Subject, ErrNotYetValid, cert.NotBefore.UTC().Format(time.RFC3339))
	case now.After(notAfter):
		return fmt.Errorf("%w: %s has %w: its chain ends at %s", ErrInvalid, cert.Subject, ErrExpired, notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Verify checks that s is inside its validity at now (CheckValidity) and
// that its Certificate chains to an anchor of b through its UpstreamChain.
func Verify(s Signer, b *bundle.Bundle, now time.Time) error {
	_, err := ChainExpiry(s, b, now)
	return err
}

// ChainExpiry verifies like Verify and returns the earliest NotAfter along
// the verified chain, anchor included: when it passes, leaves signed by s
// stop verifying.
func ChainExpiry(s Signer, b *bundle.Bundle, now time.Time) (time.Time, error) {
	if err := CheckValidity(s, now); err != nil {
		return time.Time{}, err
	}
	cert := s.Certificate()
	if b == nil {
		return time.Time{}, fmt.Errorf("%w: no trust bundle is loaded to verify it against", ErrInvalid)
	}
	inter := x509.NewCertPool()
	for _, c := range s.UpstreamChain() {
		inter.AddCert(c)
	}
	var expiry time.Time
	// Leaves are used for both server and client auth: the chain must allow
	// each (crypto/x509 accepts a chain that allows any one listed usage).
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		chains, err := cert.Verify(x509.VerifyOptions{
			Roots:         b.Pool(),
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: %s %w %.12s: %w", ErrInvalid, cert.Subject, ErrUntrusted, b.SHA256(), err)
		}
		for _, c := range chains[0] {
			if expiry.IsZero() || c.NotAfter.Before(expiry) {
				expiry = c.NotAfter
			}
		}
	}
	return expiry, nil
}
