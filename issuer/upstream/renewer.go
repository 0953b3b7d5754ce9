package upstream

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/issuer"
)

// Defaults of a Renewer.
const (
	// DefaultTTL is the lifetime asked of the upstream (--issuer-ttl).
	DefaultTTL = 48 * time.Hour
	// DefaultRetryMin and DefaultRetryMax bound the wait between failed
	// attempts, doubled from the first to the second.
	DefaultRetryMin = 5 * time.Second
	DefaultRetryMax = 5 * time.Minute
)

// Config configures a Renewer.
type Config struct {
	// Authority signs the intermediates. Required.
	Authority Authority
	// Keys makes each intermediate's key; nil means MemoryKeys.
	Keys KeySource
	// Subject of the intermediates' CSRs; empty means CN "meshid issuer".
	Subject pkix.Name
	// TTL is the lifetime asked for; 0 means DefaultTTL.
	TTL time.Duration
	// RetryMin, RetryMax: see DefaultRetryMin; 0 means the default, and
	// for RetryMax at most a sixteenth of TTL (not less than RetryMin), so
	// that a short-lived issuer is retried often enough to be renewed soon
	// after its upstream returns.
	RetryMin, RetryMax time.Duration
	// Use installs a checked intermediate (the CA swaps it into its trust
	// store, which verifies it against the bundle). An error refuses it:
	// the one in force stays. Required.
	Use func(kp *issuer.KeyPair, roots []*x509.Certificate) error
	// Observe, when set, hears every attempt (metrics, Events).
	Observe func(Attempt)
	// Clock tells the time and waits; nil means the real clock.
	Clock clock.Clock
	// Log receives a line per renewal and failure; nil discards.
	Log *slog.Logger
}

// Attempt is the outcome of one request to the upstream.
type Attempt struct {
	// Duration of the upstream call alone.
	Duration time.Duration
	// Err is nil for a renewal now in force.
	Err error
	// Refused: the upstream answered, and the answer was refused (Check or
	// Use); otherwise Err is the upstream's failure to answer.
	Refused bool
}

// Status is what a Renewer has done and will do: the rows of `meshid
// check` and the time to outage.
type Status struct {
	Upstream    string
	KeyLocation string
	// Reachable: the last attempt got an answer (used or refused).
	Reachable bool
	// LastAttempt, LastRenewal (the last intermediate put in force),
	// NextRenewal (when the next attempt is due).
	LastAttempt, LastRenewal, NextRenewal time.Time
	// NotAfter of the intermediate in force; zero before the first.
	NotAfter time.Time
	// Failures in a row, and the last one's reason.
	Failures  int
	LastError string
}

// TimeToOutage is how long the intermediate in force still signs, at now:
// what is left if the upstream stays down. Zero when none is in force or
// it has expired.
func (s Status) TimeToOutage(now time.Time) time.Duration {
	return max(s.NotAfter.Sub(now), 0)
}

// Renewer obtains the CA's intermediate from an Authority and renews it at
// half of its life. While the upstream fails, the intermediate in force
// stays and attempts repeat with a doubling wait (RetryMin to RetryMax),
// never later than the intermediate's expiry.
type Renewer struct {
	cfg Config

	mu     sync.Mutex
	status Status
}

// NewRenewer checks cfg and returns a Renewer.
func NewRenewer(cfg Config) (*Renewer, error) {
	if cfg.Authority == nil || cfg.Use == nil {
		return nil, errors.New("upstream: a Renewer needs an Authority and Use")
	}
	if cfg.Keys == nil {
		cfg.Keys = MemoryKeys{}
	}
	if len(cfg.Subject.ToRDNSequence()) == 0 {
		cfg.Subject = pkix.Name{Organization: []string{"meshid"}, CommonName: "meshid issuer"}
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("upstream: the issuer TTL must be above zero, not %s (--issuer-ttl)", cfg.TTL)
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = max(min(DefaultRetryMax, cfg.TTL/16), cfg.RetryMin)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Renewer{cfg: cfg, status: Status{Upstream: cfg.Authority.Describe(), KeyLocation: cfg.Keys.Location()}}, nil
}

// Status returns a copy of the current status.
func (r *Renewer) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Run obtains the first intermediate at once and renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	for {
		r.Renew(ctx)
		wait := r.Status().NextRenewal.Sub(r.cfg.Clock.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.Clock.After(max(wait, 0)):
		}
	}
}

// Renew makes one attempt now and schedules the next: at half of the new
// intermediate's life on success, after the retry wait on failure.
func (r *Renewer) Renew(ctx context.Context) {
	start := r.cfg.Clock.Now()
	a, kp := r.attempt(ctx)
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	st := &r.status
	st.LastAttempt = start
	st.Reachable = a.Err == nil || a.Refused
	if a.Err == nil {
		c := kp.Cert
		st.LastRenewal, st.NotAfter, st.Failures, st.LastError = now, kp.NotAfter(), 0, ""
		st.NextRenewal = c.NotBefore.Add(kp.NotAfter().Sub(c.NotBefore) / 2)
	} else {
		st.Failures++
		st.LastError = a.Err.Error()
		wait := r.cfg.RetryMin << min(st.Failures-1, 20)
		next := now.Add(min(wait, r.cfg.RetryMax))
		if !st.NotAfter.IsZero() && next.After(st.NotAfter) && now.Before(st.NotAfter) {
			next = st.NotAfter
		}
		st.NextRenewal = next
	}
	status := *st
	r.mu.Unlock()

	if a.Err == nil {
		r.cfg.Log.Info("issuer renewed by the upstream", "upstream", status.Upstream, "issuer", kp.Fingerprint(), "not_after", status.NotAfter, "next_renewal", status.NextRenewal)
	} else {
		r.cfg.Log.Error("issuer renewal failed; the issuer in force stays", "upstream", status.Upstream, "refused", a.Refused, "error", a.Err,
			"failures", status.Failures, "retry_at", status.NextRenewal, "time_to_outage", status.TimeToOutage(now).String())
	}
	if r.cfg.Observe != nil {
		r.cfg.Observe(a)
	}
}

// attempt asks the upstream for one intermediate and checks it.
func (r *Renewer) attempt(ctx context.Context) (Attempt, *issuer.KeyPair) {
	key, err := r.cfg.Keys.NewKey(ctx)
	if err != nil {
		return Attempt{Err: err}, nil
	}
	req, err := NewRequest(key, r.cfg.Subject, r.cfg.TTL)
	if err != nil {
		return Attempt{Err: err}, nil
	}
	start := r.cfg.Clock.Now()
	ans, err := r.cfg.Authority.Sign(ctx, req)
	a := Attempt{Duration: r.cfg.Clock.Since(start)}
	if err != nil {
		a.Err = fmt.Errorf("upstream %s: %w", r.cfg.Authority.Describe(), err)
		return a, nil
	}
	a.Refused = true
	if a.Err = Check(ans, key.Public(), r.cfg.Clock.Now(), r.cfg.RetryMin); a.Err != nil {
		return a, nil
	}
	kp, err := issuer.NewKeyPair(ans.Certificate, ans.Chain, key)
	if err != nil {
		a.Err = fmt.Errorf("%w: %w", ErrRefused, err)
		return a, nil
	}
	if err := r.cfg.Use(kp, ans.Roots); err != nil {
		a.Err = fmt.Errorf("%w: %w", ErrRefused, err)
		return a, nil
	}
	a.Refused = false
	return a, kp
}
