package trust

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

// State is one consistent view of the trust material. Either field may be
// nil until its first good update.
type State struct {
	Bundle *bundle.Bundle
	// Issuer signs the CA's leaves. The store checks it only through what
	// every issuer.Signer exposes (issuer.Verify, issuer.ChainExpiry).
	Issuer issuer.Signer
	// ReissueWindow, when above zero, asks proxies holding a leaf from
	// another issuer to renew within it (anchor rotation sets it).
	ReissueWindow time.Duration

	// chainErr is why Issuer does not chain to Bundle, chainExpiry when
	// that chain (anchor included) expires and chainAnchor the anchor it
	// ends at, all checked once when the state is made: the state never
	// changes, and a chain verification per request would cost more than
	// the signature.
	chainErr    error
	chainExpiry time.Time
	chainAnchor *x509.Certificate
}

// ErrHeldBack is wrapped by the error of an update the Store holds back
// until its partner arrives (see Store), as opposed to one it refuses.
var ErrHeldBack = errors.New("held back")

// Check reports whether the state can issue certificates at now: a bundle and
// an issuer are loaded and the issuer is valid and chains to the bundle.
func (s *State) Check(now time.Time) error {
	switch {
	case s.Bundle == nil:
		return errors.New("trust: no trust bundle loaded yet")
	case s.Issuer == nil:
		return errors.New("trust: no issuer loaded yet")
	}
	if err := issuer.CheckValidity(s.Issuer, now); err != nil {
		return err
	}
	if s.chainErr != nil {
		return s.chainErr
	}
	if now.After(s.chainExpiry) {
		return fmt.Errorf("trust: the issuer's chain expired at %s (its anchor, or a certificate above the issuer): leaves it signs would not verify; rotate the anchor (meshid rotate-anchor start --emergency)", s.chainExpiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// ChainExpiry is when the issuer's verified chain, anchor included, stops
// being valid; zero when the state cannot issue.
func (s *State) ChainExpiry() time.Time { return s.chainExpiry }

// ChainAnchor is the anchor of Bundle the issuer's chain ends at; nil when
// it does not chain.
func (s *State) ChainAnchor() *x509.Certificate { return s.chainAnchor }

// Config configures a Store.
type Config struct {
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// Log receives a line for every change; nil discards.
	Log *slog.Logger
}

// Store holds the current State and lets readers follow its changes.
//
// Updates are held back, not dropped, when they only need their partner: an
// issuer that does not chain to the bundle in use (or is not valid yet), and
// a bundle that would orphan the issuer in use. A held-back update is used as
// soon as the other half arrives (or, for a not-yet-valid issuer, at the
// first Retry after its NotBefore), and is forgotten when a newer update of
// the same kind arrives.
type Store struct {
	now func() time.Time
	log *slog.Logger

	state atomic.Pointer[State]

	mu            sync.Mutex
	pendingIssuer issuer.Signer
	pendingBundle *bundle.Bundle
	changed       chan struct{} // closed and replaced on every change
}

// NewStore returns an empty Store.
func NewStore(cfg Config) *Store {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{now: cfg.Clock.Now, log: cfg.Log, changed: make(chan struct{})}
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

// SetBundle parses and installs a PEM trust bundle. It reports whether the
// state changed. On error nothing changed; the bundle may be held back (see
// Store).
func (s *Store) SetBundle(pemData []byte) (bool, error) {
	b, err := bundle.Parse(pemData)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingBundle = nil
	if err != nil {
		return false, err
	}
	cur := s.state.Load()
	if cur.Bundle != nil && cur.Bundle.SHA256() == b.SHA256() {
		return false, nil
	}
	now := s.now()
	switch {
	case s.pendingIssuer != nil && issuer.Verify(s.pendingIssuer, b, now) == nil:
		s.log.Info("the held-back issuer chains to the new trust bundle; using both", "issuer", issuer.Fingerprint(s.pendingIssuer), "bundle_sha256", b.SHA256())
		s.swap(&State{Bundle: b, Issuer: s.pendingIssuer, ReissueWindow: cur.ReissueWindow})
		s.pendingIssuer = nil
	case cur.Issuer == nil || cur.Check(now) != nil || issuer.Verify(cur.Issuer, b, now) == nil:
		// Nothing usable to protect, or the issuer in use still chains.
		s.swap(&State{Bundle: b, Issuer: cur.Issuer, ReissueWindow: cur.ReissueWindow})
	default:
		s.pendingBundle = b
		return false, fmt.Errorf("trust: bundle %.12s does not hold the anchor of the issuer in use (%s), so new certificates would not verify; it is %w and will be used together with an issuer that chains to it", b.SHA256(), cur.Issuer.Certificate().Subject, ErrHeldBack)
	}
	s.log.Info("trust bundle loaded", "bundle_sha256", b.SHA256(), "anchors", len(b.Anchors()), "not_after", b.Expiry())
	return true, nil
}

// SetIssuer parses, verifies and installs an issuer from its PEM certificate
// chain and key. It reports whether the state changed. On error nothing
// changed; the issuer may be held back (see Store).
func (s *Store) SetIssuer(certPEM, keyPEM []byte) (bool, error) {
	kp, err := issuer.Parse(certPEM, keyPEM)
	return s.setIssuer(kp, err)
}

// SetIssuerCert is SetIssuer for an issuer whose key is held elsewhere (an
// HSM): certPEM must be key's certificate.
func (s *Store) SetIssuerCert(certPEM []byte, key crypto.Signer) (bool, error) {
	kp, err := issuer.ParseWithKey(certPEM, key)
	return s.setIssuer(kp, err)
}

// SetIssuerKeyPair is SetIssuer for an issuer made in the process (an
// upstream's intermediate, already checked against its upstream): the same
// checks against the bundle apply.
func (s *Store) SetIssuerKeyPair(kp *issuer.KeyPair) (bool, error) {
	if kp == nil {
		return s.setIssuer(nil, errors.New("trust: no issuer"))
	}
	return s.setIssuer(kp, nil)
}

func (s *Store) setIssuer(kp *issuer.KeyPair, err error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingIssuer = nil
	if err != nil {
		return false, err
	}
	return s.useIssuer(kp)
}

// Retry tries the held-back issuer again, for one that was not valid yet.
func (s *Store) Retry() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sg := s.pendingIssuer
	if sg == nil {
		return false, nil
	}
	s.pendingIssuer = nil
	return s.useIssuer(sg)
}

// useIssuer installs sg, holds it back, or refuses it. s.mu must be held.
func (s *Store) useIssuer(sg issuer.Signer) (bool, error) {
	cur := s.state.Load()
	fp := issuer.Fingerprint(sg)
	if cur.Issuer != nil && issuer.Fingerprint(cur.Issuer) == fp {
		return false, nil
	}
	now := s.now()
	if pb := s.pendingBundle; pb != nil && issuer.Verify(sg, pb, now) == nil {
		s.log.Info("the new issuer chains to the held-back trust bundle; using both", "issuer", fp, "bundle_sha256", pb.SHA256())
		s.swap(&State{Bundle: pb, Issuer: sg, ReissueWindow: cur.ReissueWindow})
		s.pendingBundle = nil
	} else if err := issuer.Verify(sg, cur.Bundle, now); err != nil {
		if errors.Is(err, issuer.ErrUntrusted) || errors.Is(err, issuer.ErrNotYetValid) {
			s.pendingIssuer = sg
			return false, fmt.Errorf("%w (%w: it will be used once the trust bundle holds its anchor and it is valid)", err, ErrHeldBack)
		}
		return false, err
	} else {
		s.swap(&State{Bundle: cur.Bundle, Issuer: sg, ReissueWindow: cur.ReissueWindow})
	}
	s.log.Info("issuer loaded", "issuer", fp, "subject", sg.Certificate().Subject.String(), "not_after", issuer.NotAfter(sg))
	return true, nil
}

// HeldBack reports whether an issuer and a bundle update are held back.
func (s *Store) HeldBack() (issuer, bundle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingIssuer != nil, s.pendingBundle != nil
}

// SetReissueWindow sets State.ReissueWindow; 0 clears it.
func (s *Store) SetReissueWindow(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	if cur.ReissueWindow == d {
		return false
	}
	next := *cur
	next.ReissueWindow = d
	s.swap(&next)
	s.log.Info("re-issue window set", "window", d)
	return true
}

// swap installs next and wakes the followers. s.mu must be held.
func (s *Store) swap(next *State) {
	if next.Issuer != nil && next.Bundle != nil {
		next.chainExpiry, next.chainErr = issuer.ChainExpiry(next.Issuer, next.Bundle, s.now())
		if next.chainErr == nil {
			next.chainAnchor = anchorOf(next.Issuer, next.Bundle)
		}
	}
	s.state.Store(next)
	close(s.changed)
	s.changed = make(chan struct{})
}

// anchorOf returns the anchor of b that signed the top of sg's chain.
func anchorOf(sg issuer.Signer, b *bundle.Bundle) *x509.Certificate {
	top := sg.Certificate()
	if up := sg.UpstreamChain(); len(up) > 0 {
		top = up[len(up)-1]
	}
	for _, a := range b.Anchors() {
		if bytes.Equal(top.RawIssuer, a.RawSubject) && top.CheckSignatureFrom(a) == nil {
			return a
		}
	}
	return nil
}
