package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
)

// Defaults for RenewerConfig.
const (
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 30 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// RenewerConfig configures a Renewer.
type RenewerConfig struct {
	// Client talks to the CA. Required unless Obtain is set.
	Client identityv1.IdentityClient
	// Token returns the service-account token; it is called before every
	// request, so a token file rotated by kubelet is read again. Required
	// unless Obtain is set.
	Token func() (string, error)
	// Obtain, when set, gets each certificate instead of Certify with
	// Client and Token (an external workload's join or renewal:
	// JoinExternal, RenewExternal).
	Obtain func(ctx context.Context, now time.Time) (*Issued, error)
	// Update receives every new certificate. Required.
	Update func(*Issued)
	// Skew, if set, is told how far the CA's clock is ahead of ours
	// (negative: behind) at every certificate; the CA backdates leaves, so
	// a skew of a few minutes still yields usable certificates.
	Skew func(time.Duration)
	// Check, if set, must accept a new certificate before Update sees it,
	// e.g. that it chains to the trust bundle in force; a refused one
	// counts as a failed attempt and the current certificate stays.
	Check func(*Issued) error
	// Result, if set, is told the outcome of every attempt (nil: success).
	Result func(error)
	// Clock paces renewals and retries; nil means the real clock.
	Clock clock.Clock
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// which doubles from one to the other (with jitter); 0 means
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Held, if set, reports whether the workload already holds a
	// certificate Update did not give it (one loaded at start); it only
	// changes what a failure's log line says. Nil: only certificates
	// Update received count.
	Held func() bool
	// Log receives a line per renewal and failure; nil discards.
	Log *slog.Logger
}

// Renewer keeps a workload certificate fresh: it gets one at start, again
// at each renew_after the CA paces, and retries failures with capped
// exponential backoff. It never discards a certificate: Update is only
// called with a new one, so the holder keeps serving the current one until
// it really expires.
type Renewer struct {
	cfg RenewerConfig
	now chan struct{}
}

// NewRenewer returns a Renewer, or an error if cfg is incomplete.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	if (cfg.Obtain == nil && (cfg.Client == nil || cfg.Token == nil)) || cfg.Update == nil {
		return nil, errors.New("rotation: RenewerConfig needs Client and Token (or Obtain), and Update")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Result == nil {
		cfg.Result = func(error) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Renewer{cfg: cfg, now: make(chan struct{}, 1)}, nil
}

// RenewNow asks for a renewal without waiting for renew_after.
func (r *Renewer) RenewNow() {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Run renews until ctx ends, then returns nil.
func (r *Renewer) Run(ctx context.Context) error {
	backoff := NewBackoff(r.cfg.MinBackoff, r.cfg.MaxBackoff)
	updated := false
	for {
		got, err := r.attempt(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.cfg.Result(err)
		var wait time.Duration
		if err == nil {
			r.cfg.Update(got)
			updated = true
			backoff.Reset()
			// Never sooner than MinBackoff, whatever the CA said.
			wait = max(got.RenewAfter.Sub(r.cfg.Clock.Now()), r.cfg.MinBackoff)
			leaf := got.SVID.Certificates[0]
			r.cfg.Log.Info("certificate renewed", "spiffe_id", got.SVID.ID.String(), "serial", leaf.SerialNumber.Text(16),
				"not_after", leaf.NotAfter, "renew_after", got.RenewAfter)
		} else {
			wait = backoff.Next()
			if updated || (r.cfg.Held != nil && r.cfg.Held()) {
				r.cfg.Log.Warn("certificate renewal failed; the current certificate stays in use", "error", err.Error(), RetryIn(wait))
			} else {
				r.cfg.Log.Warn("certificate request failed; no certificate is held yet, so there is no identity to serve with until one is issued", "error", err.Error(), RetryIn(wait))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.Clock.After(wait):
		case <-r.now:
		}
	}
}

func (r *Renewer) attempt(ctx context.Context) (*Issued, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	got, err := r.obtain(ctx)
	if err != nil {
		return nil, err
	}
	// A certificate not valid now (CA clock skew, an expired issuer) must
	// not replace one that is.
	now := r.cfg.Clock.Now()
	if r.cfg.Skew != nil && !got.ServerTime.IsZero() {
		r.cfg.Skew(got.ServerTime.Sub(now))
	}
	leaf := got.SVID.Certificates[0]
	if now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("rotation: the CA issued a certificate valid from %s to %s, not now (%s): check the clocks and the CA's issuer",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if r.cfg.Check != nil {
		if err := r.cfg.Check(got); err != nil {
			return nil, err
		}
	}
	if got.RenewAfter.Before(now) || got.RenewAfter.After(leaf.NotAfter) {
		got.RenewAfter = issuer.RenewAt(now, leaf.NotAfter, rand.Float64())
	}
	return got, nil
}

func (r *Renewer) obtain(ctx context.Context) (*Issued, error) {
	if r.cfg.Obtain != nil {
		return r.cfg.Obtain(ctx, r.cfg.Clock.Now())
	}
	token, err := r.cfg.Token()
	if err != nil {
		return nil, err
	}
	return Certify(ctx, r.cfg.Client, token, r.cfg.Clock.Now())
}
