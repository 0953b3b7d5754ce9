package upstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/upstream"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeAuthority signs what it is asked with root, unless down, or spoils
// its answer with defect.
type fakeAuthority struct {
	root *issuer.KeyPair
	now  func() time.Time

	mu     sync.Mutex
	down   bool
	defect func(tmpl *x509.Certificate, a *upstream.Answer) // may change the template before signing
	calls  int
}

func (f *fakeAuthority) Describe() string { return "fake" }

func (f *fakeAuthority) Sign(_ context.Context, req upstream.Request) (*upstream.Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return nil, errors.New("connection refused")
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, err
	}
	serial, _ := issuer.NewSerial()
	now := f.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: req.Subject, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(req.TTL),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	a := &upstream.Answer{Roots: []*x509.Certificate{f.root.Cert}}
	pub := csr.PublicKey
	if f.defect != nil {
		f.defect(tmpl, a)
		if tmpl.PublicKey != nil {
			pub = tmpl.PublicKey
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root.Cert, pub, f.root.Key)
	if err != nil {
		return nil, err
	}
	a.Certificate, _ = x509.ParseCertificate(der)
	return a, nil
}

func (f *fakeAuthority) set(down bool, defect func(*x509.Certificate, *upstream.Answer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.defect = down, defect
}

type harness struct {
	clock *clocktesting.FakeClock
	up    *fakeAuthority
	r     *upstream.Renewer
	inUse []*issuer.KeyPair
	atts  []upstream.Attempt
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	root, err := issuer.NewAnchor(issuer.CAParams{CommonName: "upstream root", NotBefore: t0.Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{clock: clocktesting.NewFakeClock(t0)}
	h.up = &fakeAuthority{root: root, now: h.clock.Now}
	h.r, err = upstream.NewRenewer(upstream.Config{
		Authority: h.up, TTL: 48 * time.Hour, Clock: h.clock,
		Use:     func(kp *issuer.KeyPair, _ []*x509.Certificate) error { h.inUse = append(h.inUse, kp); return nil },
		Observe: func(a upstream.Attempt) { h.atts = append(h.atts, a) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) last() *issuer.KeyPair { return h.inUse[len(h.inUse)-1] }

func TestRenewerHalfLife(t *testing.T) {
	h := newHarness(t)
	h.r.Renew(context.Background())
	if len(h.inUse) != 1 {
		t.Fatalf("first Renew put %d intermediates in use, want 1", len(h.inUse))
	}
	st := h.r.Status()
	c := h.last().Cert
	wantNext := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
	if !st.NextRenewal.Equal(wantNext) || !st.Reachable || st.Failures != 0 || st.KeyLocation != "memory" {
		t.Fatalf("status %+v; want next renewal %s (half of the life), reachable, no failures, key in memory", st, wantNext)
	}
	if got := st.TimeToOutage(t0); got != 48*time.Hour {
		t.Errorf("time to outage %s, want 48h", got)
	}
}

func TestRenewerUpstreamDownKeepsCurrent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.r.Renew(ctx)
	first := h.last()
	h.up.set(true, nil)
	// At half life the upstream is down: the first stays, retries back off.
	h.clock.SetTime(h.r.Status().NextRenewal)
	var waits []time.Duration
	for range 4 {
		before := h.clock.Now()
		h.r.Renew(ctx)
		st := h.r.Status()
		waits = append(waits, st.NextRenewal.Sub(before))
		h.clock.SetTime(st.NextRenewal)
	}
	if len(h.inUse) != 1 || h.last() != first {
		t.Fatalf("with the upstream down %d intermediates were used, want only the first", len(h.inUse))
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("retry waits %v, want %v", waits, want)
		}
	}
	st := h.r.Status()
	if st.Reachable || st.Failures != 4 || !strings.Contains(st.LastError, "connection refused") {
		t.Fatalf("status %+v; want unreachable, 4 failures, the upstream's error", st)
	}
	if ttl := st.TimeToOutage(h.clock.Now()); ttl <= 0 || ttl > 24*time.Hour {
		t.Errorf("time to outage %s, want what is left of the first intermediate (under 24h)", ttl)
	}
	// Retries never wait past the expiry of the intermediate in force.
	h.clock.SetTime(first.NotAfter().Add(-time.Second))
	h.r.Renew(ctx)
	if next := h.r.Status().NextRenewal; next.After(first.NotAfter()) {
		t.Errorf("next attempt %s after the expiry %s", next, first.NotAfter())
	}
	// Back: it recovers by itself at the next attempt.
	h.up.set(false, nil)
	h.r.Renew(ctx)
	if len(h.inUse) != 2 || h.r.Status().Failures != 0 || !h.r.Status().Reachable {
		t.Fatalf("after the upstream returned: %d in use, status %+v; want a second intermediate and a clean status", len(h.inUse), h.r.Status())
	}
}

func TestRenewerRefusesBadAnswers(t *testing.T) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherRoot, _ := issuer.NewAnchor(issuer.CAParams{CommonName: "other root", NotBefore: t0.Add(-time.Hour), TTL: time.Hour * 48})
	cases := map[string]struct {
		defect func(*x509.Certificate, *upstream.Answer)
		want   string
	}{
		"CA:FALSE":  {func(c *x509.Certificate, _ *upstream.Answer) { c.IsCA = false; c.MaxPathLenZero = false }, "not a CA"},
		"no sign":   {func(c *x509.Certificate, _ *upstream.Answer) { c.KeyUsage = x509.KeyUsageDigitalSignature }, "keyCertSign"},
		"other key": {func(c *x509.Certificate, _ *upstream.Answer) { c.PublicKey = other.Public() }, "another key"},
		"expired": {func(c *x509.Certificate, _ *upstream.Answer) {
			c.NotBefore, c.NotAfter = t0.Add(-2*time.Hour), t0.Add(-time.Hour)
		}, "expires at"},
		"wrong chain": {func(_ *x509.Certificate, a *upstream.Answer) { a.Roots = []*x509.Certificate{otherRoot.Cert} }, "does not chain"},
		"no root":     {func(_ *x509.Certificate, a *upstream.Answer) { a.Roots = nil }, "no root"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			h.r.Renew(ctx)
			first := h.last()
			h.clock.SetTime(h.r.Status().NextRenewal)
			h.up.set(false, tc.defect)
			h.r.Renew(ctx)
			if len(h.inUse) != 1 || h.last() != first {
				t.Fatalf("a %s answer was used", name)
			}
			a := h.atts[len(h.atts)-1]
			if !a.Refused || !errors.Is(a.Err, upstream.ErrRefused) || !strings.Contains(a.Err.Error(), tc.want) {
				t.Fatalf("attempt %+v; want refused, saying %q", a, tc.want)
			}
			if st := h.r.Status(); !st.Reachable || st.Failures != 1 {
				t.Errorf("status %+v; want reachable (it answered) with one failure", st)
			}
		})
	}
}

func TestRenewerUseRefusal(t *testing.T) {
	h := newHarness(t)
	var err error
	h.r, err = upstream.NewRenewer(upstream.Config{
		Authority: h.up, Clock: h.clock,
		Use: func(*issuer.KeyPair, []*x509.Certificate) error {
			return errors.New("does not chain to the trust bundle")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.r.Renew(context.Background())
	if st := h.r.Status(); st.Failures != 1 || !st.NotAfter.IsZero() || !strings.Contains(st.LastError, "trust bundle") {
		t.Fatalf("status %+v; want a failure naming the store's reason and nothing in force", st)
	}
}

func TestRenewerRunWaitsOnClock(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	step := func(n int) {
		t.Helper()
		for h.up.callsN() < n || !h.clock.HasWaiters() {
			if time.Now().After(deadline) {
				t.Fatalf("Run made %d calls, want %d", h.up.callsN(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	step(1)
	h.clock.Step(23 * time.Hour) // before half life: no call
	if h.up.callsN() != 1 {
		t.Fatalf("Run called the upstream before half life")
	}
	h.clock.Step(2 * time.Hour)
	step(2)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func (f *fakeAuthority) callsN() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func TestNewRenewerRefusesBadConfig(t *testing.T) {
	if _, err := upstream.NewRenewer(upstream.Config{}); err == nil {
		t.Error("a Renewer without an Authority was made")
	}
	if _, err := upstream.NewRenewer(upstream.Config{Authority: &fakeAuthority{}, Use: func(*issuer.KeyPair, []*x509.Certificate) error { return nil }, TTL: -time.Hour}); err == nil || !strings.Contains(err.Error(), "--issuer-ttl") {
		t.Errorf("negative TTL: %v", err)
	}
}

func TestRenewerRetryMaxFollowsShortTTL(t *testing.T) {
	h := newHarness(t)
	r, err := upstream.NewRenewer(upstream.Config{
		Authority: h.up, TTL: 3 * time.Minute, Clock: h.clock,
		Use: func(kp *issuer.KeyPair, _ []*x509.Certificate) error { h.inUse = append(h.inUse, kp); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r.Renew(ctx)
	h.up.set(true, nil)
	h.clock.SetTime(r.Status().NextRenewal)
	var last time.Duration
	for range 6 {
		before := h.clock.Now()
		r.Renew(ctx)
		last = r.Status().NextRenewal.Sub(before)
		h.clock.SetTime(r.Status().NextRenewal)
	}
	// 5, 10, then capped at 3m/16 = 11.25 s (and at the expiry).
	if last > 3*time.Minute/16 {
		t.Fatalf("a 3-minute issuer waits %s between retries, want at most %s", last, 3*time.Minute/16)
	}
}

func TestStaticKey(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k := upstream.StaticKey{Key: key, Where: "pkcs11"}
	for range 2 {
		got, err := k.NewKey(context.Background())
		if err != nil || got != key {
			t.Fatalf("NewKey = %v, %v; want the same key every time", got, err)
		}
	}
	if k.Location() != "pkcs11" {
		t.Errorf("location %q", k.Location())
	}
	if _, err := (upstream.StaticKey{}).NewKey(context.Background()); err == nil {
		t.Error("an empty StaticKey gave a key")
	}
}
