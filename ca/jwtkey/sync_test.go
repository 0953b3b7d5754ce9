package jwtkey_test

import (
	"context"
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

func TestSyncNoSecret(t *testing.T) {
	ring, _ := jwtkey.NewRing(policy)
	s := &jwtkey.Syncer{Client: fake.NewClientset(), Namespace: "meshid", Name: "meshid-jwt-keys", Ring: ring, Clock: clocktesting.NewFakeClock(t0)}
	if err := s.Round(context.Background()); err == nil {
		t.Fatal("no error without the Secret")
	}
	if len(ring.Keys()) != 0 {
		t.Fatal("keys made without a Secret to share them in")
	}
}
