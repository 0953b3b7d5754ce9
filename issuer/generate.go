package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// CAParams describes a CA certificate to generate.
type CAParams struct {
	// CommonName names the CA. Required.
	CommonName string
	// Organization is the subject's O; "meshid" when empty.
	Organization string
	// NotBefore is when it becomes valid; zero means now.
	NotBefore time.Time
	// TTL is its lifetime from NotBefore. Required.
	TTL time.Duration
	// Key is its key; nil means a new ECDSA P-256 key.
	Key crypto.Signer
	// MaxPathLenZero forbids it from signing other CAs. Issuers set it.
	MaxPathLenZero bool
}

// NewAnchor generates a self-signed trust anchor.
func NewAnchor(p CAParams) (*KeyPair, error) {
	return newCA(p, nil)
}

// NewIntermediate generates a CA certificate signed by kp, such as the
// issuer meshid-ca signs leaves with.
func (kp *KeyPair) NewIntermediate(p CAParams) (*KeyPair, error) {
	return newCA(p, kp)
}

func newCA(p CAParams, parent *KeyPair) (*KeyPair, error) {
	if p.CommonName == "" || p.TTL <= 0 {
		return nil, fmt.Errorf("issuer: a CA needs a common name and a positive TTL")
	}
	key := p.Key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("issuer: generate key: %w", err)
		}
	}
	org := p.Organization
	if org == "" {
		org = "meshid"
	}
	nb := p.NotBefore
	if nb.IsZero() {
		nb = time.Now()
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: p.CommonName, Organization: []string{org}},
		NotBefore:             nb,
		NotAfter:              nb.Add(p.TTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        p.MaxPathLenZero,
	}
	signerCert, signerKey, chain := tmpl, key, []*x509.Certificate(nil)
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("issuer: sign CA %q: %w", p.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuer: parse CA %q: %w", p.CommonName, err)
	}
	return newKeyPair(cert, chain, key)
}

// NewSerial returns a random positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("issuer: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
