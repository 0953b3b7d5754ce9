package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/issuer"
)

// leafParams describes a workload leaf.
type leafParams struct {
	ID       spiffeid.ID
	Now      time.Time
	TTL      time.Duration
	Backdate time.Duration
	// DNSNames are extra names; only the CA's own serving certificate has any.
	DNSNames []string
}

// leafTemplate builds an X.509-SVID template: one URI SAN, a random 128-bit
// serial, digital-signature key usage, server and client auth, NotBefore
// backdated for clock skew. Nothing comes from the caller's CSR but the key.
func leafTemplate(p leafParams) (*x509.Certificate, error) {
	serial, err := issuer.NewSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
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
	}, nil
}
