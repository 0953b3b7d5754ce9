package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// maxVerifiedPeers bounds the cache of verified client chains: one entry per
// live proxy certificate. Past it the cache starts again empty, which costs
// one verification per proxy, never a wrong answer.
const maxVerifiedPeers = 1 << 17

// verifiedPeers remembers the client chains peerID has verified against the
// bundle in force, so that a proxy's heartbeats and streams on a connection
// cost a map lookup instead of a chain verification (the signature checks
// were most of the CA's CPU for 10,000 heartbeating proxies, `make scale`).
// An entry holds only for the bundle it was verified against and only
// within the chain's validity; a new bundle empties the cache.
type verifiedPeers struct {
	mu     sync.Mutex
	bundle *bundle.Bundle
	m      map[[sha256.Size]byte]verifiedPeer
}

type verifiedPeer struct {
	id                  spiffeid.ID
	notBefore, notAfter time.Time // the intersection of the chain's validity
}

// key names a presented chain by the hash of its certificates, in order.
func peerKey(chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// lookup returns the ID verified for chain against b, valid at now.
func (v *verifiedPeers) lookup(b *bundle.Bundle, k [sha256.Size]byte, now time.Time) (spiffeid.ID, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bundle != b {
		return spiffeid.ID{}, false
	}
	p, ok := v.m[k]
	if !ok || now.Before(p.notBefore) || now.After(p.notAfter) {
		return spiffeid.ID{}, false
	}
	return p.id, true
}

// store records that chain verified as id against b, with the verified
// chain's validity.
func (v *verifiedPeers) store(b *bundle.Bundle, k [sha256.Size]byte, id spiffeid.ID, verified []*x509.Certificate) {
	p := verifiedPeer{id: id}
	for i, c := range verified {
		if i == 0 || c.NotBefore.After(p.notBefore) {
			p.notBefore = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(p.notAfter) {
			p.notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bundle != b || v.m == nil || len(v.m) >= maxVerifiedPeers {
		v.bundle, v.m = b, make(map[[sha256.Size]byte]verifiedPeer)
	}
	v.m[k] = p
}
