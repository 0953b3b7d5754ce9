package jwtkey

import (
	"encoding/json"
	"sync"
	"time"
)

// Ring holds the key set in force and the Policy it follows, for the
// signer and the publishers; Set replaces the set (from the key Secret) and
// wakes those waiting on Changed.
type Ring struct {
	policy Policy

	mu      sync.Mutex
	keys    []Key
	changed chan struct{}
}

// NewRing returns an empty ring for p, or p's validation error.
func NewRing(p Policy) (*Ring, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Ring{policy: p, changed: make(chan struct{})}, nil
}

// Policy is the ring's policy.
func (r *Ring) Policy() Policy { return r.policy }

// Set installs keys; callers must not modify them afterwards. Those
// waiting on Changed wake only when the set differs.
func (r *Ring) Set(keys []Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	same := len(keys) == len(r.keys)
	for i := 0; same && i < len(keys); i++ {
		same = keys[i].ID == r.keys[i].ID && keys[i].NotBefore.Equal(r.keys[i].NotBefore) && keys[i].NotAfter.Equal(r.keys[i].NotAfter)
	}
	r.keys = keys
	if same {
		return // nothing a publisher shows changed: no wake-up
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// Keys returns the set in force.
func (r *Ring) Keys() []Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys
}

// Changed returns a channel closed at the next Set.
func (r *Ring) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Active is the key that signs at now.
func (r *Ring) Active(now time.Time) (Key, bool) { return ActiveAt(r.Keys(), now) }

// JWKS is the JSON of the keys published at now; nil when there are none.
func (r *Ring) JWKS(now time.Time) []byte {
	set := JWKS(r.Keys(), now, r.policy)
	if len(set.Keys) == 0 {
		return nil
	}
	data, err := json.Marshal(set)
	if err != nil {
		return nil // ECDSA public keys always marshal
	}
	return data
}
