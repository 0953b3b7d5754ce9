//go:build spire

// This test runs a real SPIRE server; it is built only with -tags spire and
// needs MESHID_SPIRE_BIN (the folder holding spire-server, as printed by
// test/bench/spire-install.sh):
//
//	MESHID_SPIRE_BIN=$(test/bench/spire-install.sh) go test -tags spire ./test/bench/ -run TestSPIREMint -v

package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSPIREMint(t *testing.T) {
	binDir := os.Getenv("MESHID_SPIRE_BIN")
	if binDir == "" {
		t.Fatal("MESHID_SPIRE_BIN is not set: run MESHID_SPIRE_BIN=$(test/bench/spire-install.sh) go test -tags spire ./test/bench/")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s, err := StartSPIRE(ctx, filepath.Join(binDir, "spire-server"), t.TempDir(), Pinned{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if s.PID() <= 0 {
		t.Errorf("PID() = %d", s.PID())
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := &url.URL{Scheme: "spiffe", Host: SPIRETrustDomain, Path: "/ns/bench/sa/sa-0"}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * time.Minute
	before := time.Now()
	chain, err := s.Mint(ctx, csr, ttl)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("leaf URI SANs = %v, want [%s]", leaf.URIs, id)
	}
	if got := leaf.NotAfter.Sub(before); got < ttl-time.Minute || got > ttl+time.Minute {
		t.Errorf("leaf NotAfter is %s after the request, want about %s", got, ttl)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("leaf does not carry the CSR's public key")
	}
	t.Logf("minted %s, chain of %d, NotAfter %s, pid %d", leaf.URIs[0], len(chain), leaf.NotAfter.Format(time.RFC3339), s.PID())
}
