package issuer_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseFixtures parses and verifies the tls.crt and tls.key files in
// testdata/, named after their defect (test/fixtures_test.go generates
// them), against the bundle of testdata/anchor.pem.
func TestParseFixtures(t *testing.T) {
	anchors, err := bundle.Parse(readFixture(t, "anchor.pem"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // inside the fixtures' validity
	tests := []struct {
		name      string
		cert, key []string // files, concatenated
		parse     string   // a part of Parse's error; empty: it parses
		verify    error    // what Verify wraps; nil: it verifies
	}{
		{name: "issuer", cert: []string{"issuer.pem"}, key: []string{"issuer.key"}},
		{name: "issuer with its anchor appended", cert: []string{"issuer.pem", "anchor.pem"}, key: []string{"issuer.key"}},
		{name: "key of another CA", cert: []string{"issuer.pem"}, key: []string{"anchor.key"}, parse: "does not match"},
		{name: "no certificate", cert: nil, key: []string{"issuer.key"}, parse: "no PEM CERTIFICATE block"},
		{name: "no key", cert: []string{"issuer.pem"}, key: nil, parse: "no PEM private key block"},
		{name: "not a CA", cert: []string{"issuer-not-ca.pem"}, key: []string{"issuer-not-ca.key"}, parse: "not a CA certificate"},
		{name: "no keyCertSign", cert: []string{"issuer-no-cert-sign.pem"}, key: []string{"issuer-no-cert-sign.key"}, parse: "keyCertSign"},
		{name: "expired", cert: []string{"expired-intermediate.pem"}, key: []string{"expired-intermediate.key"}, verify: issuer.ErrExpired},
		{name: "from another anchor", cert: []string{"untrusted-intermediate.pem"}, key: []string{"untrusted-intermediate.key"}, verify: issuer.ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cert, key []byte
			for _, f := range tt.cert {
				cert = append(cert, readFixture(t, f)...)
			}
			for _, f := range tt.key {
				key = append(key, readFixture(t, f)...)
			}
			kp, err := issuer.Parse(cert, key)
			if tt.parse != "" {
				if !errors.Is(err, issuer.ErrInvalid) || !strings.Contains(err.Error(), tt.parse) {
					t.Fatalf("Parse = %v; want ErrInvalid saying %q", err, tt.parse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(kp.Chain) != 0 {
				t.Fatalf("chain holds %d certificates; the self-signed anchor must be dropped", len(kp.Chain))
			}
			err = kp.Verify(anchors, now)
			if tt.verify == nil && err != nil || tt.verify != nil && !errors.Is(err, tt.verify) {
				t.Fatalf("Verify = %v; want %v", err, tt.verify)
			}
		})
	}
}
