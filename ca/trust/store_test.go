package trust_test

import (
	"errors"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

// ca makes an anchor (parent nil) or an intermediate of parent.
func ca(t *testing.T, parent *issuer.KeyPair, name string, nb time.Time, ttl time.Duration) *issuer.KeyPair {
	t.Helper()
	opts := []issuertest.Option{issuertest.Name(name), issuertest.NotBefore(nb), issuertest.TTL(ttl)}
	if parent == nil {
		return issuertest.Anchor(t, opts...)
	}
	return issuertest.Intermediate(t, parent, opts...)
}

func pems(t *testing.T, kp *issuer.KeyPair) ([]byte, []byte) {
	t.Helper()
	return kp.CertPEM(), issuertest.KeyPEM(t, kp.Key)
}

// fingerprint names the issuer of st, or "" when it has none.
func fingerprint(st *trust.State) string {
	if st.Issuer == nil {
		return ""
	}
	return issuer.Fingerprint(st.Issuer)
}

func TestStore(t *testing.T) {
	now := time.Now()
	oldAnchor := ca(t, nil, "old anchor", now.Add(-time.Hour), 365*24*time.Hour)
	newAnchor := ca(t, nil, "new anchor", now.Add(-time.Hour), 365*24*time.Hour)
	oldIssuer := ca(t, oldAnchor, "old issuer", now.Add(-time.Hour), 48*time.Hour)
	newIssuer := ca(t, newAnchor, "new issuer", now.Add(-time.Hour), 48*time.Hour)
	expiredIssuer := ca(t, oldAnchor, "expired issuer", now.Add(-72*time.Hour), 48*time.Hour)

	s := trust.NewStore(trust.Config{Clock: clocktesting.NewFakePassiveClock(now)})
	if err := s.Load().Check(now); err == nil {
		t.Fatal("an empty store says it can issue")
	}
	if _, err := s.SetBundle(oldAnchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	cert, key := pems(t, oldIssuer)
	changed := s.Changed()
	if ok, err := s.SetIssuer(cert, key); !ok || err != nil {
		t.Fatalf("SetIssuer(old issuer) = %v, %v", ok, err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not closed by a new issuer")
	}
	if err := s.Load().Check(now); err != nil {
		t.Fatal(err)
	}
	good := s.Load()

	refused := []struct {
		name      string
		cert, key []byte
	}{
		{name: "garbage", cert: []byte("garbage"), key: []byte("garbage")},
		{name: "key of another issuer", cert: cert, key: func() []byte { _, k := pems(t, newIssuer); return k }()},
		{name: "expired", cert: expiredIssuer.CertPEM(), key: func() []byte { _, k := pems(t, expiredIssuer); return k }()},
		{name: "anchor as leaf-only chain: unknown anchor", cert: newIssuer.CertPEM(), key: func() []byte { _, k := pems(t, newIssuer); return k }()},
	}
	for _, tt := range refused {
		if ok, err := s.SetIssuer(tt.cert, tt.key); ok || err == nil {
			t.Errorf("%s: SetIssuer = %v, %v; want refused", tt.name, ok, err)
		}
		if s.Load() != good {
			t.Fatalf("%s: a refused issuer changed the state", tt.name)
		}
	}
	if _, err := s.SetBundle([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")); err == nil {
		t.Fatal("a malformed bundle was accepted")
	}
	if s.Load() != good {
		t.Fatal("a refused bundle changed the state")
	}

	// The new issuer was kept as pending: adding its anchor takes both.
	both, err := bundle.New(oldAnchor.Cert, newAnchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetBundle(both.PEM()); err != nil {
		t.Fatal(err)
	}
	if got := s.Load().Issuer; issuer.Fingerprint(got) != newIssuer.Fingerprint() {
		t.Fatalf("issuer %s after the bundle gained its anchor, want the pending new issuer", got.Certificate().Subject)
	}
	if err := s.Load().Check(now); err != nil {
		t.Fatal(err)
	}
}

// loaded returns a store holding anchor's bundle and iss.
func loaded(t *testing.T, clk *clocktesting.FakePassiveClock, anchor, iss *issuer.KeyPair) *trust.Store {
	t.Helper()
	s := trust.NewStore(trust.Config{Clock: clk})
	if _, err := s.SetBundle(anchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	cert, key := pems(t, iss)
	if _, err := s.SetIssuer(cert, key); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreHoldsBack(t *testing.T) {
	now := time.Now()
	oldAnchor := ca(t, nil, "old anchor", now.Add(-time.Hour), 365*24*time.Hour)
	newAnchor := ca(t, nil, "new anchor", now.Add(-time.Hour), 365*24*time.Hour)
	oldIssuer := ca(t, oldAnchor, "old issuer", now.Add(-time.Hour), 48*time.Hour)
	newIssuer := ca(t, newAnchor, "new issuer", now.Add(-time.Hour), 48*time.Hour)
	newCert, newKey := pems(t, newIssuer)

	t.Run("a bundle that orphans the issuer in use waits for its issuer", func(t *testing.T) {
		s := loaded(t, clocktesting.NewFakePassiveClock(now), oldAnchor, oldIssuer)
		before := s.Load()
		if ok, err := s.SetBundle(newAnchor.CertPEM()); ok || !errors.Is(err, trust.ErrHeldBack) {
			t.Fatalf("SetBundle(new anchor only) = %v, %v; want held back", ok, err)
		}
		if s.Load() != before {
			t.Fatal("a held-back bundle changed the state")
		}
		if issuer, bundle := s.HeldBack(); issuer || !bundle {
			t.Fatalf("HeldBack = %v, %v; want the bundle", issuer, bundle)
		}
		if ok, err := s.SetIssuer(newCert, newKey); !ok || err != nil {
			t.Fatalf("SetIssuer(new) = %v, %v; want both installed", ok, err)
		}
		if st := s.Load(); fingerprint(st) != newIssuer.Fingerprint() || !st.Bundle.Contains(newAnchor.Cert) || st.Check(now) != nil {
			t.Fatal("the pair was not installed together")
		}
	})
	t.Run("an issuer from a new anchor waits for its bundle", func(t *testing.T) {
		s := loaded(t, clocktesting.NewFakePassiveClock(now), oldAnchor, oldIssuer)
		if ok, err := s.SetIssuer(newCert, newKey); ok || !errors.Is(err, trust.ErrHeldBack) {
			t.Fatalf("SetIssuer(new) = %v, %v; want held back", ok, err)
		}
		if issuer, bundle := s.HeldBack(); !issuer || bundle {
			t.Fatalf("HeldBack = %v, %v; want the issuer", issuer, bundle)
		}
		if ok, err := s.SetBundle(newAnchor.CertPEM()); !ok || err != nil {
			t.Fatalf("SetBundle(new) = %v, %v; want both installed", ok, err)
		}
		st := s.Load()
		if fingerprint(st) != newIssuer.Fingerprint() {
			t.Fatal("the held-back issuer was not used")
		}
		if issuer, bundle := s.HeldBack(); issuer || bundle {
			t.Fatalf("HeldBack = %v, %v after both were used", issuer, bundle)
		}
		if a := st.ChainAnchor(); a == nil || !a.Equal(newAnchor.Cert) {
			t.Fatalf("ChainAnchor = %v, want the new anchor", a)
		}
	})
	t.Run("a withdrawn issuer never comes back", func(t *testing.T) {
		s := loaded(t, clocktesting.NewFakePassiveClock(now), oldAnchor, oldIssuer)
		_, _ = s.SetIssuer(newCert, newKey) // held back
		if _, err := s.SetIssuer([]byte("garbage"), []byte("garbage")); err == nil {
			t.Fatal("garbage accepted")
		}
		both, _ := bundle.New(oldAnchor.Cert, newAnchor.Cert)
		if _, err := s.SetBundle(both.PEM()); err != nil {
			t.Fatal(err)
		}
		if fingerprint(s.Load()) != oldIssuer.Fingerprint() {
			t.Fatal("an issuer withdrawn from the Secret came back when its anchor arrived")
		}
	})
	t.Run("a not-yet-valid issuer is used once valid", func(t *testing.T) {
		clock := clocktesting.NewFakePassiveClock(now)
		s := loaded(t, clock, oldAnchor, oldIssuer)
		future := ca(t, oldAnchor, "future issuer", now.Add(time.Minute), 48*time.Hour)
		cert, key := pems(t, future)
		if ok, err := s.SetIssuer(cert, key); ok || err == nil {
			t.Fatalf("SetIssuer(not yet valid) = %v, %v; want held back", ok, err)
		}
		if ok, _ := s.Retry(); ok {
			t.Fatal("Retry used it before its NotBefore")
		}
		clock.SetTime(now.Add(2 * time.Minute))
		if ok, err := s.Retry(); !ok || err != nil {
			t.Fatalf("Retry after NotBefore = %v, %v", ok, err)
		}
		if fingerprint(s.Load()) != future.Fingerprint() {
			t.Fatal("the issuer was not installed")
		}
	})
}

func TestStoreSetIssuerKeyPair(t *testing.T) {
	now := time.Now()
	anchor := ca(t, nil, "upstream root", now.Add(-time.Hour), 365*24*time.Hour)
	other := ca(t, nil, "other root", now.Add(-time.Hour), 365*24*time.Hour)
	s := trust.NewStore(trust.Config{Clock: clocktesting.NewFakePassiveClock(now)})
	if _, err := s.SetBundle(anchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	good := ca(t, anchor, "from upstream", now.Add(-time.Minute), 48*time.Hour)
	if ok, err := s.SetIssuerKeyPair(good); !ok || err != nil {
		t.Fatalf("SetIssuerKeyPair(good) = %v, %v", ok, err)
	}
	// One of another root is held back (not in the bundle), never used.
	stranger := ca(t, other, "stranger", now.Add(-time.Minute), 48*time.Hour)
	if ok, err := s.SetIssuerKeyPair(stranger); ok || !errors.Is(err, trust.ErrHeldBack) {
		t.Fatalf("SetIssuerKeyPair(other root's) = %v, %v; want held back", ok, err)
	}
	if _, err := s.SetIssuerKeyPair(nil); err == nil {
		t.Fatal("SetIssuerKeyPair(nil) took nothing")
	}
	if got := fingerprint(s.Load()); got != issuer.Fingerprint(good) {
		t.Fatalf("issuer in force %s, want the good one", got)
	}
}
