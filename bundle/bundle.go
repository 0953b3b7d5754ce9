package bundle

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxSize is the largest PEM bundle Parse accepts, in bytes. A ConfigMap
// holds at most 1 MiB; a bundle of a few anchors is a few KiB.
const MaxSize = 1 << 20

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("bundle: invalid trust bundle")

// Bundle is a validated, immutable set of trust anchors.
type Bundle struct {
	anchors []*x509.Certificate
	pem     []byte
	sha256  string
}

// Parse reads a PEM bundle: one or more CERTIFICATE blocks, each a CA
// certificate allowed to sign certificates. Whitespace around blocks is
// allowed; any other text, another block type or a duplicate anchor is not.
// Expired anchors are accepted here; Expiry and the CA's checks report them.
func Parse(data []byte) (*Bundle, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes is more than the %d-byte limit", ErrInvalid, len(data), MaxSize)
	}
	var (
		b    Bundle
		seen = map[string]bool{}
		rest = data
	)
	for n := 1; ; n++ {
		// pem.Decode silently skips text before a block; a bundle must not
		// hide anything, so only whitespace may stand between blocks.
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: text that is not a PEM block where block %d should start (%q)", ErrInvalid, n, truncate(rest, 20))
		}
		// pem.Decode also skips a broken block and returns the next good
		// one; decode exactly one BEGIN..END block at a time.
		end := bytes.Index(rest, []byte("-----END "))
		if end < 0 || bytes.Contains(rest[len("-----BEGIN "):end], []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: block %d has no END line before the next block or the end of the data", ErrInvalid, n)
		}
		next := len(rest)
		if nl := bytes.IndexByte(rest[end:], '\n'); nl >= 0 {
			next = end + nl + 1
		}
		block, tail := pem.Decode(rest[:next])
		if block == nil || len(bytes.TrimSpace(tail)) > 0 {
			return nil, fmt.Errorf("%w: block %d is not valid PEM (check its BEGIN/END lines and base64)", ErrInvalid, n)
		}
		rest = rest[next:]
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: block %d is %q, want CERTIFICATE (a bundle never holds keys)", ErrInvalid, n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: block %d: %w", ErrInvalid, n, err)
		}
		if err := CheckCA(cert); err != nil {
			return nil, fmt.Errorf("%w: block %d (%s): %w", ErrInvalid, n, cert.Subject, err)
		}
		if seen[string(cert.Raw)] {
			return nil, fmt.Errorf("%w: block %d (%s) repeats an earlier anchor", ErrInvalid, n, cert.Subject)
		}
		seen[string(cert.Raw)] = true
		b.anchors = append(b.anchors, cert)
	}
	if len(b.anchors) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block found", ErrInvalid)
	}
	b.pem = Encode(b.anchors)
	sum := sha256.Sum256(b.pem)
	b.sha256 = hex.EncodeToString(sum[:])
	return &b, nil
}

// New builds a Bundle from already parsed anchors, with the checks of Parse.
func New(anchors ...*x509.Certificate) (*Bundle, error) {
	return Parse(Encode(anchors))
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// CheckCA checks that cert is a CA certificate allowed to sign certificates.
func CheckCA(cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("not a CA certificate (basicConstraints CA:TRUE is missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("its key usage does not allow signing certificates (keyCertSign)")
	}
	return nil
}

// Fingerprint returns the lowercase hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Encode writes certificates as PEM CERTIFICATE blocks, in order.
func Encode(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// Anchors returns the anchors in bundle order. The slice is a copy; the
// certificates are shared and must not be modified.
func (b *Bundle) Anchors() []*x509.Certificate {
	return append([]*x509.Certificate(nil), b.anchors...)
}

// PEM returns the canonical PEM form. The caller must not modify it.
func (b *Bundle) PEM() []byte { return b.pem }

// SHA256 returns the lowercase hex SHA-256 of PEM(); it names this version.
func (b *Bundle) SHA256() string { return b.sha256 }

// Pool returns a new pool holding the anchors.
func (b *Bundle) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, a := range b.anchors {
		pool.AddCert(a)
	}
	return pool
}

// X509Bundle returns the anchors as a go-spiffe bundle for td.
func (b *Bundle) X509Bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, b.anchors)
}

// Contains reports whether cert is one of the anchors.
func (b *Bundle) Contains(cert *x509.Certificate) bool {
	for _, a := range b.anchors {
		if a.Equal(cert) {
			return true
		}
	}
	return false
}

// Expiry returns the earliest NotAfter among the anchors.
func (b *Bundle) Expiry() time.Time {
	first := b.anchors[0].NotAfter
	for _, a := range b.anchors[1:] {
		if a.NotAfter.Before(first) {
			first = a.NotAfter
		}
	}
	return first
}
