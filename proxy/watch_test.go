package proxy

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	clocktesting "k8s.io/utils/clock/testing"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/identity"
)

// brokenCA fails every WatchBundle call, and says when one comes.
type brokenCA struct {
	identityv1.IdentityClient
	calls chan struct{}
}

func (b *brokenCA) WatchBundle(context.Context, *identityv1.WatchBundleRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[identityv1.Bundle], error) {
	b.calls <- struct{}{}
	return nil, errors.New("CA down")
}

// retryLog hands over the retry_in of every record that has one; it is
// logged as a readable duration, rounded to the millisecond.
type retryLog struct{ waits chan time.Duration }

func (h retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h retryLog) WithGroup(string) slog.Handler            { return h }
func (h retryLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			d, err := time.ParseDuration(a.Value.String())
			if err != nil || a.Value.Kind() != slog.KindString {
				d = -1 // not a readable duration: the test fails on it
			}
			h.waits <- d
		}
		return true
	})
	return nil
}

// TestBundleStreamReconnectsAfterBackoff: after the stream breaks, the
// proxy waits on its clock for the backoff it logged (within the first
// step's bounds, 0.5 to 1 s; the log rounds it to the millisecond) and
// reconnects then, not a millisecond before.
func TestBundleStreamReconnectsAfterBackoff(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	ca := &brokenCA{calls: make(chan struct{}, 10)}
	waits := make(chan time.Duration, 10)
	p, err := New(Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain),
		CA:          "127.0.0.1:1", CAID: spiffeid.RequireFromString("spiffe://cluster.local/ns/meshid/sa/meshid-ca"),
		TokenFile: "token", BundleFile: "bundle",
		Log: slog.New(retryLog{waits}), Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.watchBundleStream(ctx, ca) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watchBundleStream = %v, want nil on cancel", err)
		}
	}()

	<-ca.calls
	for attempt := range 3 {
		wait := <-waits
		if attempt == 0 && (wait < 500*time.Millisecond || wait > time.Second) {
			t.Fatalf("first retry in %s, want 0.5 to 1 s", wait)
		}
		waitForWaiter(t, clock)
		clock.Step(wait - time.Millisecond)
		if !clock.HasWaiters() {
			t.Fatalf("attempt %d: the wait ended before the %s backoff", attempt, wait)
		}
		select {
		case <-ca.calls:
			t.Fatalf("attempt %d: reconnected before the %s backoff", attempt, wait)
		default:
		}
		clock.Step(2 * time.Millisecond)
		// The reconnect is the evidence, not the clock's waiters: the
		// follower may already be waiting on its next backoff.
		select {
		case <-ca.calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d: still waiting after the %s backoff", attempt, wait)
		}
	}
}

// waitForWaiter returns once something waits on c.
func waitForWaiter(t *testing.T, c *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !c.HasWaiters() {
		select {
		case <-deadline:
			t.Fatal("the stream follower never waited on the clock")
		case <-time.After(time.Millisecond):
		}
	}
}
