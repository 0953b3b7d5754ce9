package trust

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/bundle"
)

// State is one consistent view of the trust material. Either field may be
// nil until its first good update.
type State struct {
	Bundle *bundle.Bundle
	Issuer *issuer.KeyPair

	// chainErr is why Issuer does not chain to Bundle, checked once when
	// the state is made: the state never changes, and a chain verification
	// per request would cost more than the signature.
	chainErr error
}

// Check reports whether the state can issue certificates at now: a bundle and
// an issuer are loaded and the issuer is valid and chains to the bundle.
func (s *State) Check(now time.Time) error {
	switch {
	case s.Bundle == nil:
		return errors.New("trust: no trust bundle loaded yet")
	case s.Issuer == nil:
		return errors.New("trust: no issuer loaded yet")
	}
	if err := s.Issuer.CheckValidity(now); err != nil {
		return err
	}
	return s.chainErr
}

// Config configures a Store.
type Config struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Log receives a line for every change; nil discards.
	Log *slog.Logger
}

// Store holds the current State and lets readers follow its changes.
type Store struct {
	now func() time.Time
	log *slog.Logger

	state atomic.Pointer[State]

	mu      sync.Mutex
	pending *issuer.KeyPair // parsed, refused only for not chaining yet
	changed chan struct{}   // closed and replaced on every change
}

// NewStore returns an empty Store.
func NewStore(cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{now: cfg.Now, log: cfg.Log, changed: make(chan struct{})}
	s.state.Store(&State{})
	return s
}

// Load returns the current state. Callers must not modify it.
func (s *Store) Load() *State { return s.state.Load() }

// Changed returns a channel that is closed at the next change of the state.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// SetBundle parses and installs a PEM trust bundle. On error the current
// bundle stays. It reports whether the bundle changed.
func (s *Store) SetBundle(pemData []byte) (bool, error) {
	b, err := bundle.Parse(pemData)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	if cur.Bundle != nil && cur.Bundle.SHA256() == b.SHA256() {
		return false, nil
	}
	next := &State{Bundle: b, Issuer: cur.Issuer}
	now := s.now()
	if s.pending != nil && s.pending.Verify(b, now) == nil {
		next.Issuer, s.pending = s.pending, nil
		s.log.Info("pending issuer now chains to the trust bundle; using it", "issuer", next.Issuer.Fingerprint(), "bundle_sha256", b.SHA256())
	}
	s.swap(next)
	if next.chainErr != nil {
		s.log.Warn("the current issuer does not chain to the new trust bundle; certificates it signs will not verify until a matching issuer arrives", "issuer", next.Issuer.Fingerprint(), "error", next.chainErr)
	}
	s.log.Info("trust bundle loaded", "bundle_sha256", b.SHA256(), "anchors", len(b.Anchors()), "not_after", b.Expiry())
	return true, nil
}

// SetIssuer parses, verifies and installs an issuer from its PEM certificate
// chain and key. On error the current issuer stays; if the only fault is
// that it does not chain to the current bundle, it is kept as pending and
// installed by the first SetBundle it chains to. It reports whether the
// issuer changed.
func (s *Store) SetIssuer(certPEM, keyPEM []byte) (bool, error) {
	kp, err := issuer.Parse(certPEM, keyPEM)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	if cur.Issuer != nil && cur.Issuer.Fingerprint() == kp.Fingerprint() {
		s.pending = nil
		return false, nil
	}
	now := s.now()
	if err := kp.Verify(cur.Bundle, now); err != nil {
		if now.Before(kp.Cert.NotAfter) && !now.Before(kp.Cert.NotBefore) {
			s.pending = kp
			return false, fmt.Errorf("%w (kept as pending: it will be used once the trust bundle holds its anchor)", err)
		}
		return false, err
	}
	s.pending = nil
	s.swap(&State{Bundle: cur.Bundle, Issuer: kp})
	s.log.Info("issuer loaded", "issuer", kp.Fingerprint(), "subject", kp.Cert.Subject.String(), "not_after", kp.Cert.NotAfter)
	return true, nil
}

// swap installs next and wakes the followers. s.mu must be held.
func (s *Store) swap(next *State) {
	if next.Issuer != nil && next.Bundle != nil {
		next.chainErr = next.Issuer.Verify(next.Bundle, s.now())
	}
	s.state.Store(next)
	close(s.changed)
	s.changed = make(chan struct{})
}
