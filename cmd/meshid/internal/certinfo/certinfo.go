package certinfo

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshid/meshid/bundle"
)

// Report describes one certificate, for inspect, verify and check.
type Report struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	TimeLeft  string    `json:"time_left"`
	KeyType   string    `json:"key_type"`
	IsCA      bool      `json:"is_ca"`
	SHA256    string    `json:"sha256"`
}

// Describe reports c as of now.
func Describe(c *x509.Certificate, now time.Time) Report {
	r := Report{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames,
		Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		TimeLeft: TimeLeft(c.NotAfter, now), KeyType: keyType(c), IsCA: c.IsCA, SHA256: bundle.Fingerprint(c),
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			r.SPIFFEID = u.String()
		}
	}
	return r
}

// TimeLeft says how long until t, or how long ago it passed.
func TimeLeft(t, now time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		return "expired " + human(-d) + " ago"
	}
	return human(d)
}

// human formats a duration the way an operator reads it: 63d, 5h12m, 40s.
func human(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return d.Round(time.Second).String()
}

func keyType(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", c.PublicKey), "*")
}

// Parse reads every CERTIFICATE block; other blocks are refused, as keys
// have no business being inspected by accident.
func Parse(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q; inspect reads certificates only", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}
