package certinfo

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
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
	// KeyUsage and ExtKeyUsage name the usages the certificate allows
	// (DigitalSignature, CertSign, ...; ServerAuth, ClientAuth, ...).
	KeyUsage    []string `json:"key_usage,omitempty"`
	ExtKeyUsage []string `json:"ext_key_usage,omitempty"`
	// PathLen is a CA's path length constraint: "0", "1", ..., or
	// "unlimited"; "" for a leaf.
	PathLen string `json:"path_len,omitempty"`
	SHA256  string `json:"sha256"`
}

// Describe reports c as of now.
func Describe(c *x509.Certificate, now time.Time) Report {
	r := Report{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), DNSNames: c.DNSNames,
		Serial: Serial(c), NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		TimeLeft: TimeLeft(c.NotAfter, now), KeyType: KeyType(c.PublicKey), IsCA: c.IsCA, SHA256: bundle.Fingerprint(c),
		KeyUsage: keyUsages(c.KeyUsage), ExtKeyUsage: extKeyUsages(c),
	}
	if c.IsCA {
		switch {
		case c.MaxPathLen > 0 || c.MaxPathLen == 0 && c.MaxPathLenZero:
			r.PathLen = strconv.Itoa(c.MaxPathLen)
		default:
			r.PathLen = "unlimited"
		}
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

// Serial is the serial number in hex as the certificate encodes it, two
// digits a byte (leading zeros kept, as openssl prints it and as meshid-ca
// logs it).
func Serial(c *x509.Certificate) string {
	if c.SerialNumber.Sign() == 0 {
		return "00"
	}
	s := hex.EncodeToString(c.SerialNumber.Bytes())
	if c.SerialNumber.Sign() < 0 {
		s = "-" + s
	}
	return s
}

// KeyType names a public key's algorithm and size: "ECDSA P-256",
// "RSA 2048", "Ed25519".
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", pub), "*")
}

var keyUsageNames = []struct {
	bit  x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "DigitalSignature"},
	{x509.KeyUsageContentCommitment, "ContentCommitment"},
	{x509.KeyUsageKeyEncipherment, "KeyEncipherment"},
	{x509.KeyUsageDataEncipherment, "DataEncipherment"},
	{x509.KeyUsageKeyAgreement, "KeyAgreement"},
	{x509.KeyUsageCertSign, "CertSign"},
	{x509.KeyUsageCRLSign, "CRLSign"},
	{x509.KeyUsageEncipherOnly, "EncipherOnly"},
	{x509.KeyUsageDecipherOnly, "DecipherOnly"},
}

func keyUsages(ku x509.KeyUsage) []string {
	var names []string
	for _, u := range keyUsageNames {
		if ku&u.bit != 0 {
			names = append(names, u.name)
		}
	}
	return names
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "Any",
	x509.ExtKeyUsageServerAuth:      "ServerAuth",
	x509.ExtKeyUsageClientAuth:      "ClientAuth",
	x509.ExtKeyUsageCodeSigning:     "CodeSigning",
	x509.ExtKeyUsageEmailProtection: "EmailProtection",
	x509.ExtKeyUsageTimeStamping:    "TimeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

func extKeyUsages(c *x509.Certificate) []string {
	var names []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("ExtKeyUsage(%d)", int(u)))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return names
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
