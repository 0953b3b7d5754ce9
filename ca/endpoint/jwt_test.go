package endpoint_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/endpoint"
	"github.com/meshid/meshid/issuer/issuertest"
)

// TestJWTAuthorities: the document carries the JWT-SVID keys, which a
// federated peer validates JWT-SVIDs with, and a new key raises the
// sequence number.
func TestJWTAuthorities(t *testing.T) {
	anchor := issuertest.Anchor(t)
	inter := issuertest.Intermediate(t, anchor)
	caID := spiffeid.RequireFromPath(td, "/ns/meshid/sa/meshid-ca")
	svid := issuertest.Leaf(t, inter, caID)
	b := mustBundle(t, anchor)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	created := anchor.Cert.NotBefore.Add(time.Hour)
	keys := []endpoint.JWTAuthority{{ID: "k1", Key: key.Public(), Created: created}}
	h, err := endpoint.Handler(endpoint.Config{TrustDomain: td, Bundle: func() *bundle.Bundle { return b }, JWTAuthorities: func() []endpoint.JWTAuthority { return keys }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{
		Certificate: [][]byte{svid.Cert.Raw, inter.Cert.Raw}, PrivateKey: svid.Key, Leaf: svid.Cert,
	}}}
	srv.StartTLS()
	defer srv.Close()
	got, err := federation.FetchBundle(context.Background(), td, srv.URL, federation.WithSPIFFEAuth(b.X509Bundle(td), caID))
	if err != nil {
		t.Fatal(err)
	}
	jwt := jwtbundle.FromJWTAuthorities(td, got.JWTAuthorities())
	if k, ok := jwt.FindJWTAuthority("k1"); !ok || !key.PublicKey.Equal(k) {
		t.Fatalf("JWT authorities %v; want k1", got.JWTAuthorities())
	}
	if seq, _ := got.SequenceNumber(); seq != uint64(created.Unix()) {
		t.Fatalf("sequence %d; want the new key's creation %d", seq, created.Unix())
	}
}
