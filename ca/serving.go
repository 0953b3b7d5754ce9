package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/issuer"
)

// servingCert is the CA's own TLS certificate, an X.509-SVID for the CA's
// identity (plus DNS names) signed by the current issuer. Clients verify it
// with the trust bundle they already hold, so the CA needs no other secret.
// It is minted on first use and again when the issuer changes or half its
// life has passed.
type servingCert struct {
	id       spiffeid.ID
	dnsNames []string
	ttl      time.Duration
	backdate time.Duration
	store    *trust.Store
	now      func() time.Time

	mu       sync.Mutex
	cert     *tls.Certificate
	issuerFP string
	renewAt  time.Time
}

// GetCertificate is a tls.Config callback.
func (c *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.store.Load()
	if st.Issuer == nil {
		return nil, errors.New("ca: no issuer loaded yet to mint the serving certificate")
	}
	now := c.now()
	fp := issuer.Fingerprint(st.Issuer)
	if c.cert != nil && c.issuerFP == fp && now.Before(c.renewAt) {
		return c.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	out, err := st.Issuer.Sign(context.Background(), issuer.LeafParams{
		ID: c.id, PublicKey: key.Public(), Now: now, TTL: c.ttl, Backdate: c.backdate, DNSNames: c.dnsNames,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	leaf, err := out.Certificate()
	if err != nil {
		return nil, err
	}
	chain := [][]byte{out.DER}
	for _, ic := range out.Intermediates {
		chain = append(chain, ic.Raw)
	}
	c.cert = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	c.issuerFP = fp
	c.renewAt = issuer.RenewAt(now, out.NotAfter, 0)
	return c.cert, nil
}
