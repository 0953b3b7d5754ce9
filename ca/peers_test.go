package ca

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// TestVerifiedPeers: an entry answers only for the bundle it was verified
// against and only within the chain's validity; the cache is bounded.
func TestVerifiedPeers(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{Raw: []byte("leaf"), NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)}
	inter := &x509.Certificate{Raw: []byte("issuer"), NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(12 * time.Hour)}
	anchor := &x509.Certificate{Raw: []byte("anchor"), NotBefore: t0.Add(time.Minute), NotAfter: t0.Add(365 * 24 * time.Hour)}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	b1, b2 := &bundle.Bundle{}, &bundle.Bundle{}
	key := peerKey([]*x509.Certificate{leaf, inter})

	var v verifiedPeers
	if _, ok := v.lookup(b1, key, t0.Add(time.Hour)); ok {
		t.Fatal("an empty cache answered")
	}
	v.store(b1, key, id, []*x509.Certificate{leaf, inter, anchor})
	for _, c := range []struct {
		name string
		b    *bundle.Bundle
		key  [32]byte
		now  time.Time
		want bool
	}{
		{"same chain, bundle and time", b1, key, t0.Add(time.Hour), true},
		{"another bundle", b2, key, t0.Add(time.Hour), false},
		{"another chain", b1, peerKey([]*x509.Certificate{leaf}), t0.Add(time.Hour), false},
		{"before the anchor is valid", b1, key, t0, false},
		{"after the issuer expired, the leaf still valid", b1, key, t0.Add(13 * time.Hour), false},
	} {
		got, ok := v.lookup(c.b, c.key, c.now)
		if ok != c.want || (ok && got != id) {
			t.Errorf("%s: lookup = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
	// A store for a new bundle forgets the old bundle's entries.
	v.store(b2, peerKey([]*x509.Certificate{inter}), id, []*x509.Certificate{inter})
	if _, ok := v.lookup(b1, key, t0.Add(time.Hour)); ok {
		t.Error("an entry of the old bundle answered after a new bundle was stored")
	}
	// Past the bound the cache starts again.
	for i := range maxVerifiedPeers {
		v.store(b2, [32]byte{byte(i), byte(i >> 8), byte(i >> 16), 1}, id, []*x509.Certificate{leaf})
	}
	if n := len(v.m); n > maxVerifiedPeers {
		t.Fatalf("%d entries, over the bound %d", n, maxVerifiedPeers)
	}
}
