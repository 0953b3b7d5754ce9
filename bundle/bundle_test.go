package bundle_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer/issuertest"
)

// cert is a new self-signed certificate, a CA or not, with key usage usage.
func cert(t testing.TB, isCA bool, usage x509.KeyUsage) *x509.Certificate {
	t.Helper()
	opts := []issuertest.Option{issuertest.KeyUsage(usage), issuertest.TTL(time.Hour)}
	if !isCA {
		opts = append(opts, issuertest.NotCA())
	}
	return issuertest.Certificate(t, nil, opts...).Cert
}

func TestParse(t *testing.T) {
	a := cert(t, true, x509.KeyUsageCertSign)
	b := cert(t, true, 0)
	leaf := cert(t, false, x509.KeyUsageDigitalSignature)
	noCertSign := cert(t, true, x509.KeyUsageDigitalSignature)
	two := bundle.Encode([]*x509.Certificate{a, b})

	tests := []struct {
		name    string
		data    []byte
		anchors int
	}{
		{name: "one anchor", data: bundle.Encode([]*x509.Certificate{a}), anchors: 1},
		{name: "two anchors", data: two, anchors: 2},
		{name: "whitespace around blocks", data: append(append([]byte("\n\n  "), two...), "\n\t\n"...), anchors: 2},
		{name: "empty", data: nil},
		{name: "only whitespace", data: []byte("\n \n")},
		{name: "text between blocks", data: append(append(bundle.Encode([]*x509.Certificate{a}), "# comment\n"...), bundle.Encode([]*x509.Certificate{b})...)},
		{name: "broken block before a good one", data: append([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n"), bundle.Encode([]*x509.Certificate{a})...)},
		{name: "block without end", data: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n")},
		{name: "bad base64 block then good", data: append([]byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), bundle.Encode([]*x509.Certificate{a})...)},
		{name: "private key block", data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})},
		{name: "bad der", data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")})},
		{name: "leaf certificate", data: bundle.Encode([]*x509.Certificate{leaf})},
		{name: "ca without certSign", data: bundle.Encode([]*x509.Certificate{noCertSign})},
		{name: "duplicate anchor", data: bundle.Encode([]*x509.Certificate{a, a})},
		{name: "oversized", data: make([]byte, bundle.MaxSize+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bundle.Parse(tt.data)
			if tt.anchors == 0 {
				if !errors.Is(err, bundle.ErrInvalid) || got != nil {
					t.Fatalf("Parse = %v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil || len(got.Anchors()) != tt.anchors {
				t.Fatalf("Parse = %v, %v; want %d anchors", got, err, tt.anchors)
			}
		})
	}
}

func TestCanonicalHash(t *testing.T) {
	a, b := cert(t, true, 0), cert(t, true, 0)
	plain, err := bundle.New(a, b)
	if err != nil {
		t.Fatal(err)
	}
	spaced, err := bundle.Parse(bytes.ReplaceAll(plain.PEM(), []byte("-----\n-----BEGIN"), []byte("-----\n\n\n-----BEGIN")))
	if err != nil {
		t.Fatal(err)
	}
	if plain.SHA256() != spaced.SHA256() {
		t.Fatal("whitespace changed the bundle's hash")
	}
	reordered, _ := bundle.New(b, a)
	if reordered.SHA256() == plain.SHA256() {
		t.Fatal("a different bundle has the same hash")
	}
	if !plain.Contains(a) || plain.Contains(cert(t, true, 0)) {
		t.Fatal("Contains is wrong")
	}
}

func FuzzParse(f *testing.F) {
	a := cert(f, true, 0)
	f.Add(bundle.Encode([]*x509.Certificate{a}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bundle.Parse(data)
		if err != nil {
			if !errors.Is(err, bundle.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Whatever was accepted round-trips to the same bundle, and only
		// holds CA certificates.
		again, err := bundle.Parse(b.PEM())
		if err != nil || again.SHA256() != b.SHA256() {
			t.Fatalf("canonical form does not round-trip: %v", err)
		}
		for _, c := range b.Anchors() {
			if !c.IsCA {
				t.Fatal("accepted a non-CA anchor")
			}
		}
	})
}
