// Package state owns what every handshake of the proxy reads: the current
// workload certificate and trust bundle, held as one immutable Snapshot
// behind an atomic pointer. TLS callbacks only Load it; the renewer and the
// bundle watchers replace it; the Workload API follows its changes.
//
// It imports rotation/ only.
package state

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/rotation"
)

// Snapshot is the proxy's identity at one moment. Fields are nil until
// their first update.
type Snapshot struct {
	// SVID is the workload certificate, key and chain.
	SVID *x509svid.SVID
	// RenewAfter is when the renewer will replace SVID.
	RenewAfter time.Time
	// Bundle holds the trust anchors.
	Bundle *bundle.Bundle
	// JWTBundle holds the trust domain's JWT-SVID signing keys (from the
	// CA's jwt_authorities).
	JWTBundle *jwtbundle.Bundle
	// Foreign holds the anchors of each foreign trust domain the CA
	// federates with; a peer of one is verified against its own only.
	Foreign map[spiffeid.TrustDomain]*bundle.Bundle

	x509 *x509bundle.Bundle // Bundle for the trust domain, built once
	set  *x509bundle.Set    // Bundle and Foreign, built once
	jwks string             // JWTBundle as the CA sent it
	cert *tls.Certificate   // SVID for crypto/tls, built once
}

// Bundles returns the bundles of our trust domain and of every foreign one
// (nil before the first bundle).
func (snap *Snapshot) Bundles() *x509bundle.Set { return snap.set }

// Certificate returns the SVID for crypto/tls, or nil before the first.
func (snap *Snapshot) Certificate() *tls.Certificate { return snap.cert }

// Store holds the current Snapshot.
type Store struct {
	td      spiffeid.TrustDomain
	current atomic.Pointer[Snapshot]

	mu      sync.Mutex
	changed chan struct{}
}

// NewStore returns an empty store for trust domain td.
func NewStore(td spiffeid.TrustDomain) *Store {
	s := &Store{td: td, changed: make(chan struct{})}
	s.current.Store(&Snapshot{})
	return s
}

// TrustDomain returns the proxy's trust domain.
func (s *Store) TrustDomain() spiffeid.TrustDomain { return s.td }

// Load returns the current snapshot. Callers must not modify it.
func (s *Store) Load() *Snapshot { return s.current.Load() }

// Changed returns a channel closed at the next change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// SetSVID installs a new certificate.
func (s *Store) SetSVID(i *rotation.Issued) {
	cert := i.Certificate()
	s.update(func(next *Snapshot) bool {
		next.SVID, next.RenewAfter, next.cert = i.SVID, i.RenewAfter, cert
		return true
	})
}

// SetBundle installs b and reports whether it differs from the current one.
func (s *Store) SetBundle(b *bundle.Bundle) bool {
	changed := false
	s.update(func(next *Snapshot) bool {
		if next.Bundle != nil && next.Bundle.SHA256() == b.SHA256() {
			return false
		}
		next.Bundle, next.x509, changed = b, b.X509Bundle(s.td), true
		next.set = s.set(next)
		return true
	})
	return changed
}

// SetJWTBundle installs the JWKS of the trust domain's JWT-SVID keys and
// reports whether it changed; a JWKS that does not parse is refused and
// the last good one stays.
func (s *Store) SetJWTBundle(jwks []byte) (bool, error) {
	b, err := jwtbundle.Parse(s.td, jwks)
	if err != nil {
		return false, fmt.Errorf("state: JWT bundle: %w", err)
	}
	changed := false
	s.update(func(next *Snapshot) bool {
		if next.jwks == string(jwks) {
			return false
		}
		next.JWTBundle, next.jwks, changed = b, string(jwks), true
		return true
	})
	return changed, nil
}

// SetForeign installs the foreign trust domains' bundles (our own trust
// domain among them is ignored) and reports whether they differ from the
// current ones.
func (s *Store) SetForeign(foreign map[spiffeid.TrustDomain]*bundle.Bundle) bool {
	changed := false
	s.update(func(next *Snapshot) bool {
		kept := map[spiffeid.TrustDomain]*bundle.Bundle{}
		for td, b := range foreign {
			if td != s.td && b != nil {
				kept[td] = b
			}
		}
		if sameForeign(kept, next.Foreign) {
			return false
		}
		if len(kept) == 0 {
			kept = nil
		}
		next.Foreign, changed = kept, true
		next.set = s.set(next)
		return true
	})
	return changed
}

func sameForeign(a, b map[spiffeid.TrustDomain]*bundle.Bundle) bool {
	if len(a) != len(b) {
		return false
	}
	for td, x := range a {
		if y, ok := b[td]; !ok || x.SHA256() != y.SHA256() {
			return false
		}
	}
	return true
}

// set builds the x509bundle.Set of next; nil before the first bundle.
func (s *Store) set(next *Snapshot) *x509bundle.Set {
	if next.x509 == nil {
		return nil
	}
	set := x509bundle.NewSet(next.x509)
	for td, b := range next.Foreign {
		set.Add(b.X509Bundle(td))
	}
	return set
}

// update applies change to a copy of the current snapshot and installs it
// if change reports a change.
func (s *Store) update(change func(*Snapshot) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := *s.current.Load()
	if !change(&next) {
		return
	}
	s.current.Store(&next)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Ready reports whether the proxy holds a certificate valid at now and a
// bundle; if not, it says why.
func (snap *Snapshot) Ready(now time.Time) error {
	switch {
	case snap.Bundle == nil:
		return errors.New("no trust bundle loaded")
	case snap.SVID == nil:
		return errors.New("no certificate yet: the CA has not answered")
	case now.After(snap.SVID.Certificates[0].NotAfter):
		return fmt.Errorf("the certificate expired at %s and renewal has not succeeded", snap.SVID.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// GetX509SVID implements x509svid.Source.
func (s *Store) GetX509SVID() (*x509svid.SVID, error) {
	if svid := s.Load().SVID; svid != nil {
		return svid, nil
	}
	return nil, errors.New("state: no certificate yet")
}

// GetX509BundleForTrustDomain implements x509bundle.Source: the proxy's
// own trust domain has its bundle, a foreign one its own (none without
// federation).
func (s *Store) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	snap := s.Load()
	if snap.set == nil {
		return nil, errors.New("state: no trust bundle loaded")
	}
	if b, ok := snap.set.Get(td); ok {
		return b, nil
	}
	return nil, fmt.Errorf("state: no bundle for trust domain %q (ours is %q, and no FederatedTrustDomain names it)", td, s.td)
}
