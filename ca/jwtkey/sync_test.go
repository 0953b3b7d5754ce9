package jwtkey_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/ca/jwtkey"
)

// TestSyncReplicasAgree: two replicas on one Secret sign with the same key,
// and the second takes the first's keys rather than making its own.
func TestSyncReplicasAgree(t *testing.T) {
	client := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "meshid", Name: "meshid-jwt-keys"}})
	clk := clocktesting.NewFakeClock(t0)
	replica := func() *jwtkey.Syncer {
		ring, err := jwtkey.NewRing(policy)
		if err != nil {
			t.Fatal(err)
		}
		return &jwtkey.Syncer{Client: client, Namespace: "meshid", Name: "meshid-jwt-keys", Ring: ring, Clock: clk}
	}
	a, b := replica(), replica()
	for _, s := range []*jwtkey.Syncer{a, b} {
		if err := s.Round(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ka, _ := a.Ring.Active(t0)
	kb, okb := b.Ring.Active(t0)
	if !okb || ka.ID != kb.ID || len(b.Ring.Keys()) != 1 {
		t.Fatalf("replicas disagree: %s and %s (%d keys)", ka.ID, kb.ID, len(b.Ring.Keys()))
	}
	// Near the end of the key's life, the successor reaches both.
	clk.SetTime(t0.Add(23 * time.Hour))
	for _, s := range []*jwtkey.Syncer{b, a} {
		if err := s.Round(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.Ring.Keys()) != 2 || a.Ring.Keys()[1].ID != b.Ring.Keys()[1].ID {
		t.Fatal("the successor is not the same on both replicas")
	}
}

// TestSyncCreatesSecret: on first start the Secret is created and holds
// the key that signs.
func TestSyncCreatesSecret(t *testing.T) {
	client := fake.NewClientset()
	ring, _ := jwtkey.NewRing(policy)
	s := &jwtkey.Syncer{Client: client, Namespace: "meshid", Name: "meshid-jwt-keys", Ring: ring, Clock: clocktesting.NewFakeClock(t0)}
	if err := s.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	sec, err := client.CoreV1().Secrets("meshid").Get(context.Background(), "meshid-jwt-keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := jwtkey.Unmarshal(sec.Data[jwtkey.DataKey])
	if err != nil || len(stored) != 1 {
		t.Fatalf("the Secret holds %d keys (%v); want the one that signs", len(stored), err)
	}
	if k, ok := ring.Active(t0); !ok || k.ID != stored[0].ID {
		t.Fatal("the ring does not sign with the stored key")
	}
}

// TestSyncRefusesBadSecret: a corrupt key set is not replaced and the keys
// in force stay.
func TestSyncRefusesBadSecret(t *testing.T) {
	client := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "meshid", Name: "meshid-jwt-keys"}, Data: map[string][]byte{jwtkey.DataKey: []byte("{")}})
	ring, _ := jwtkey.NewRing(policy)
	keys, _ := next(t, nil, t0)
	ring.Set(keys)
	s := &jwtkey.Syncer{Client: client, Namespace: "meshid", Name: "meshid-jwt-keys", Ring: ring, Clock: clocktesting.NewFakeClock(t0)}
	if err := s.Round(context.Background()); err == nil || !strings.Contains(err.Error(), "not a key set") {
		t.Fatalf("error %v; want one that says the key set is corrupt", err)
	}
	if k, ok := ring.Active(t0); !ok || k.ID != keys[0].ID {
		t.Fatal("the keys in force changed")
	}
	sec, _ := client.CoreV1().Secrets("meshid").Get(context.Background(), "meshid-jwt-keys", metav1.GetOptions{})
	if string(sec.Data[jwtkey.DataKey]) != "{" {
		t.Fatal("the corrupt Secret was overwritten")
	}
}

func TestNextChange(t *testing.T) {
	keys, _ := next(t, nil, t0)
	if got, want := jwtkey.NextChange(keys, policy), t0.Add(policy.Lifetime-policy.PublishLead); !got.Equal(want) {
		t.Fatalf("next change %s; want the successor due at %s", got, want)
	}
	keys, _ = next(t, keys, t0.Add(23*time.Hour))
	if got, want := jwtkey.NextChange(keys, policy), t0.Add(policy.Lifetime+policy.MaxTTL); !got.Equal(want) {
		t.Fatalf("next change %s; want the first key's grace end %s", got, want)
	}
}

// TestSyncRunRotates: Run makes the first key at once and the successor
// when it falls due (NextChange), without waiting for its interval.
func TestSyncRunRotates(t *testing.T) {
	client := fake.NewClientset()
	clk := clocktesting.NewFakeClock(t0)
	ring, _ := jwtkey.NewRing(policy)
	s := &jwtkey.Syncer{Client: client, Namespace: "meshid", Name: "meshid-jwt-keys", Ring: ring, Clock: clk, Interval: 100 * time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(n int) {
		t.Helper()
		for range 1000 {
			changed := ring.Changed()
			if len(ring.Keys()) == n && clk.HasWaiters() {
				return
			}
			select {
			case <-changed:
			case <-time.After(10 * time.Millisecond): // poll for the fake clock's waiter
			}
		}
		t.Fatalf("%d keys; want %d", len(ring.Keys()), n)
	}
	waitFor(1)
	clk.SetTime(t0.Add(policy.Lifetime - policy.PublishLead + 2*time.Second))
	waitFor(2)
	if k, _ := ring.Active(clk.Now()); k.ID != ring.Keys()[0].ID {
		t.Fatal("the successor signs before its time")
	}
}
