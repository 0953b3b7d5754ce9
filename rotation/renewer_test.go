package rotation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation"
)

// fakeCA signs whatever it is asked, with leaves of ttl from the clock's
// now, and fails while failures > 0.
type fakeCA struct {
	identityv1.IdentityClient
	iss      *issuer.KeyPair
	clock    *clocktesting.FakeClock
	ttl      time.Duration
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *fakeCA) Certify(ctx context.Context, req *identityv1.CertifyRequest, _ ...grpc.CallOption) (*identityv1.CertifyResponse, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "CA down")
	}
	return signCSR(ctx, f.iss, req.GetCsr(), f.clock.Now(), f.ttl)
}

func TestRenewer(t *testing.T) {
	start := time.Now()
	clock := clocktesting.NewFakeClock(start)
	ca := &fakeCA{iss: newIssuer(t), clock: clock, ttl: 2 * time.Minute}
	ca.failures.Store(2)
	updates := make(chan *rotation.Issued, 10)
	results := make(chan error, 10)
	tokens := atomic.Int32{}
	r, err := rotation.NewRenewer(rotation.RenewerConfig{
		Client: ca,
		Token:  func() (string, error) { tokens.Add(1); return "token", nil },
		Update: func(i *rotation.Issued) { updates <- i },
		Result: func(err error) { results <- err },
		Clock:  clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	// Two failures, each retried after a backoff on the clock.
	for range 2 {
		if err := <-results; status.Code(err) != codes.Unavailable {
			t.Fatalf("result %v, want Unavailable", err)
		}
		waitForTimer(t, clock)
		clock.Step(rotation.DefaultMaxBackoff)
	}
	first := <-updates
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	// The next renewal waits for renew_after, not less. The clock walks
	// to a second before it in steps; after each one the renewer must be
	// waiting on the clock again without having asked the CA. That proves
	// it saw the new time: a Step fires and removes every due waiter before
	// it returns, and a renewer woken early only waits again after it has
	// called the CA and Update.
	waitForTimer(t, clock)
	calls := ca.calls.Load()
	const steps = 4
	step := (first.RenewAfter.Sub(clock.Now()) - time.Second) / steps
	for i := range steps {
		clock.Step(step)
		waitForTimer(t, clock)
		select {
		case got := <-updates:
			t.Fatalf("renewed %s before renew_after (step %d of %d): renew_after %s, new renew_after %s",
				first.RenewAfter.Sub(clock.Now()), i+1, steps, first.RenewAfter, got.RenewAfter)
		default:
		}
		if n := ca.calls.Load(); n != calls {
			t.Fatalf("asked the CA %d times %s before renew_after", n-calls, first.RenewAfter.Sub(clock.Now()))
		}
	}
	clock.Step(first.RenewAfter.Sub(clock.Now()))
	second := <-updates
	if first.SVID.PrivateKey.(*ecdsa.PrivateKey).Equal(second.SVID.PrivateKey) {
		t.Fatal("a renewal reused the private key")
	}
	if got := tokens.Load(); got != ca.calls.Load() {
		t.Fatalf("token read %d times for %d requests; it must be read for each", got, ca.calls.Load())
	}

	// RenewNow skips the wait.
	waitForTimer(t, clock)
	r.RenewNow()
	<-updates
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v on cancel", err)
	}
}

func TestRenewerTokenError(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Now())
	ca := &fakeCA{iss: newIssuer(t), clock: clock, ttl: time.Hour}
	results := make(chan error, 1)
	r, _ := rotation.NewRenewer(rotation.RenewerConfig{
		Client: ca,
		Token:  func() (string, error) { return "", errors.New("token file missing") },
		Update: func(*rotation.Issued) { t.Error("update without a certificate") },
		Result: func(err error) { results <- err },
		Clock:  clock,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	if err := <-results; err == nil || ca.calls.Load() != 0 {
		t.Fatalf("result %v after %d CA calls; want the token error and no call", err, ca.calls.Load())
	}
}

// waitForTimer waits until the renewer is blocked on the fake clock.
func waitForTimer(t *testing.T, c *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !c.HasWaiters() {
		select {
		case <-deadline:
			t.Fatal("the renewer never waited on the clock")
		case <-time.After(time.Millisecond):
		}
	}
}

// TestRenewerRefusesStaleCertificate: a CA whose clock is behind hands out
// a certificate that has already expired; it must not replace anything and
// must not be retried in a tight loop.
func TestRenewerRefusesStaleCertificate(t *testing.T) {
	now := time.Now()
	clock := clocktesting.NewFakeClock(now)
	ca := &fakeCA{iss: newIssuer(t), clock: clocktesting.NewFakeClock(now.Add(-2 * time.Hour)), ttl: time.Hour}
	results := make(chan error, 10)
	r, _ := rotation.NewRenewer(rotation.RenewerConfig{
		Client: ca,
		Token:  func() (string, error) { return "token", nil },
		Update: func(*rotation.Issued) { t.Error("an expired certificate replaced the current one") },
		Result: func(err error) { results <- err },
		Clock:  clock,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	if err := <-results; err == nil || !strings.Contains(err.Error(), "not now") {
		t.Fatalf("result %v, want a refusal of the stale certificate", err)
	}
	waitForTimer(t, clock) // it backs off on the clock instead of spinning
	if n := ca.calls.Load(); n != 1 {
		t.Fatalf("%d CA calls before the backoff, want 1", n)
	}
}

// TestRenewerClockSkew: a proxy whose clock is 2 minutes behind the CA's
// still gets a usable certificate (the CA backdates leaves), and is told
// the skew.
func TestRenewerClockSkew(t *testing.T) {
	now := time.Now()
	ca := &fakeCA{iss: newIssuer(t), clock: clocktesting.NewFakeClock(now.Add(2 * time.Minute)), ttl: time.Hour}
	updates := make(chan *rotation.Issued, 1)
	skews := make(chan time.Duration, 1)
	r, _ := rotation.NewRenewer(rotation.RenewerConfig{
		Client: ca,
		Token:  func() (string, error) { return "token", nil },
		Update: func(i *rotation.Issued) { updates <- i },
		Skew:   func(d time.Duration) { skews <- d },
		Clock:  clocktesting.NewFakeClock(now),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	select {
	case <-updates:
	case <-time.After(10 * time.Second):
		t.Fatal("no usable certificate for a proxy 2 minutes behind the CA")
	}
	if d := <-skews; d < 119*time.Second || d > 121*time.Second {
		t.Fatalf("skew %s, want about 2m", d)
	}
}

// syncBuffer is a log sink the renewer's goroutine writes while the test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitForLog waits until the log holds want.
func waitForLog(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(b.String(), want) {
		select {
		case <-deadline:
			t.Fatalf("log %q never held %q", b.String(), want)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestRenewerLog: a failure before any certificate is held does not claim
// a current certificate stays in use; one after does; retry_in is a
// readable duration, not nanoseconds.
func TestRenewerLog(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held at start %v", held), func(t *testing.T) {
			clock := clocktesting.NewFakeClock(time.Now())
			ca := &fakeCA{iss: newIssuer(t), clock: clock, ttl: time.Hour}
			ca.failures.Store(1)
			results := make(chan error, 10)
			var log syncBuffer
			r, err := rotation.NewRenewer(rotation.RenewerConfig{
				Client: ca,
				Token:  func() (string, error) { return "token", nil },
				Update: func(*rotation.Issued) {},
				Result: func(err error) { results <- err },
				Held:   func() bool { return held },
				Clock:  clock,
				Log:    slog.New(slog.NewJSONHandler(&log, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = r.Run(ctx) }()

			<-results
			first := `"msg":"certificate request failed; no certificate is held yet`
			if held {
				first = `"msg":"certificate renewal failed; the current certificate stays in use"`
			}
			waitForLog(t, &log, first)
			if !regexp.MustCompile(`"retry_in":"[0-9.]+m?s"`).MatchString(log.String()) {
				t.Fatalf("retry_in is not a readable duration: %s", log.String())
			}
			if held {
				return
			}
			waitForTimer(t, clock)
			clock.Step(rotation.DefaultMaxBackoff)
			if err := <-results; err != nil {
				t.Fatal(err)
			}
			ca.failures.Store(1)
			r.RenewNow()
			<-results
			waitForLog(t, &log, `"msg":"certificate renewal failed; the current certificate stays in use"`)
		})
	}
}
