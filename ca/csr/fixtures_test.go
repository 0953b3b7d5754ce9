package csr_test

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshid/meshid/ca/csr"
)

// TestCheckFixtures checks the requests in testdata/, named after their
// defect (test/fixtures_test.go generates them), for the identity id.
func TestCheckFixtures(t *testing.T) {
	tests := []struct {
		file string
		want csr.Reason // empty: accepted
	}{
		{file: "csr.pem"},
		{file: "csr-own-id.pem"},
		{file: "wrong-csr-bad-signature.pem", want: csr.BadSignature},
		{file: "wrong-csr-not-der.pem", want: csr.Malformed},
		{file: "wrong-csr-ca-true.pem", want: csr.CARequested},
		{file: "wrong-csr-other-sa.pem", want: csr.NameMismatch},
		{file: "wrong-csr-other-trust-domain.pem", want: csr.NameMismatch},
		{file: "wrong-csr-dns-san.pem", want: csr.NameMismatch},
		{file: "wrong-csr-ip-san.pem", want: csr.NameMismatch},
		{file: "wrong-csr-email-san.pem", want: csr.NameMismatch},
		{file: "wrong-csr-key-p224.pem", want: csr.WeakKey},
		{file: "wrong-csr-key-rsa-1024.pem", want: csr.WeakKey},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode(data)
			if block == nil || block.Type != "CERTIFICATE REQUEST" || len(rest) != 0 {
				t.Fatalf("%s is not one PEM CERTIFICATE REQUEST block", tt.file)
			}
			pub, err := csr.Check(block.Bytes, id)
			if tt.want == "" {
				if err != nil || pub == nil {
					t.Fatalf("Check = %v, %v; want accepted", pub, err)
				}
				return
			}
			var e *csr.Error
			if !errors.As(err, &e) || e.Reason != tt.want || pub != nil {
				t.Fatalf("Check = %v, %v; want refused with reason %s", pub, err, tt.want)
			}
		})
	}
}
