package keys_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/issuer/keys"
)

func TestOpenRefusesBadURIs(t *testing.T) {
	for name, uri := range map[string]string{
		"unknown scheme":  "file:/etc/key.pem",
		"pin on the line": "pkcs11:token=t;id=01;object=k?module-path=/m.so&pin-value=1234",
		"no pin source":   "pkcs11:token=t;id=01;object=k?module-path=/m.so",
		"no token":        "pkcs11:id=01;object=k?pin-source=/p",
		"no id":           "pkcs11:token=t;object=k?pin-source=/p",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := keys.Open(context.Background(), uri, keys.Options{})
			if err == nil {
				t.Fatalf("Open(%q) succeeded", uri)
			}
			if strings.Contains(err.Error(), "1234") {
				t.Errorf("the error shows the PIN: %v", err)
			}
		})
	}
}

func TestMemoryKeySignsLeaves(t *testing.T) {
	k, err := keys.Open(context.Background(), "memory", keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Location() != keys.Memory {
		t.Errorf("location %q", k.Location())
	}
	signAndVerify(t, k)
}

// signAndVerify makes an issuer for k under a new anchor, signs a leaf
// with it and verifies the leaf against the anchor alone.
func signAndVerify(t *testing.T, k *keys.Key) {
	t.Helper()
	anchor := issuertest.Anchor(t)
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "meshid issuer", TTL: time.Hour, Key: k, MaxPathLenZero: true})
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := keys.Open(context.Background(), "memory", keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	got, err := iss.Sign(context.Background(), issuer.LeafParams{ID: id, PublicKey: leafKey.Public(), Now: time.Now(), TTL: time.Minute})
	if err != nil {
		t.Fatalf("sign a leaf: %v", err)
	}
	leaf, err := got.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor.Cert)
	for _, c := range got.Intermediates {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the leaf does not verify against the anchor: %v", err)
	}
}

func TestPKCS11KeyInSoftHSM(t *testing.T) {
	hsm := newSoftHSM(t)
	uri := hsm.uri("01", "meshid-issuer")
	if _, err := keys.Open(context.Background(), uri, keys.Options{}); err == nil || !strings.Contains(err.Error(), "pkcs11-tool") {
		t.Fatalf("opening a missing key without Create: %v, want a refusal naming how to create it", err)
	}
	k, err := keys.Open(context.Background(), uri, keys.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Location() != keys.PKCS11 {
		t.Errorf("location %q", k.Location())
	}
	if strings.Contains(k.URI(), "pin-source") {
		t.Errorf("URI() shows the query: %s", k.URI())
	}
	signAndVerify(t, k)
	// One process initialises a module once (crypto11), so k is closed
	// before the token is read directly and before the key is opened again.
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	hsm.assertNotExtractable(t, "meshid-issuer")

	// Opened again (a restart), it is the same key.
	again, err := keys.Open(context.Background(), uri, keys.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !k.Public().(*ecdsa.PublicKey).Equal(again.Public()) {
		t.Error("opening the key again gave another key")
	}
}

func TestPKCS11ModuleLostAndBack(t *testing.T) {
	hsm := newSoftHSM(t)
	k, err := keys.Open(context.Background(), hsm.uri("02", "lost"), keys.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.Health(context.Background()); err != nil {
		t.Fatalf("health before: %v", err)
	}
	if err := keys.CloseModule(k); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	if _, err := k.Sign(nil, d, nil); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("sign with the module closed: %v, want ErrUnavailable", err)
	}
	// The token still holds the key: Health opens the module again.
	if err := k.Health(context.Background()); err != nil {
		t.Fatalf("health after the module came back: %v", err)
	}
	signAndVerify(t, k)

	// Pointed at a configuration without the token: not ready, no crash.
	if err := keys.CloseModule(k); err != nil {
		t.Fatal(err)
	}
	hsm.pointAway(t)
	if err := k.Health(context.Background()); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("health with the token gone: %v, want ErrUnavailable", err)
	}
	hsm.pointBack(t)
	if err := k.Health(context.Background()); err != nil {
		t.Fatalf("health with the token back: %v", err)
	}
}
