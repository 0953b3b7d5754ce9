package jwtkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Syncer keeps a Ring equal to the key Secret that every replica shares,
// and advances the set's lifecycle in it: each round reads the Secret,
// decides Next at now, and, if the set must change, writes it back with an
// update conditional on the resourceVersion it read. Two replicas that
// decide at once both generate; one update wins, the other gets a conflict
// and takes the winner's keys on its next read, so every replica signs with
// and publishes the same keys.
type Syncer struct {
	// Client reads and updates the Secret. Required.
	Client kubernetes.Interface
	// Namespace and Name locate the Secret. A missing one is created,
	// empty, by server-side apply (authorized as a create of that name, so
	// RBAC can name it: get, update, create and patch on that name only),
	// and then filled by the conditional update like any other round.
	Namespace, Name string
	// Ring receives the set in force. Required.
	Ring *Ring
	// Interval between rounds; 0 means 30 s. A round also runs when the
	// set is next due to change (NextChange), if that is sooner, and a
	// conflict retries at once.
	Interval time.Duration
	// Clock decides and paces; nil means the real clock.
	Clock clock.Clock
	// Result, when set, is told every round's outcome (nil: the set in
	// force is the Secret's), for metrics.
	Result func(error)
	// Log; nil discards.
	Log *slog.Logger
}

// Run syncs until ctx ends and returns nil then.
func (s *Syncer) Run(ctx context.Context) error {
	if s.Client == nil || s.Ring == nil || s.Name == "" {
		return errors.New("jwtkey: Syncer needs Client, Ring and the Secret's Name")
	}
	if s.Interval <= 0 {
		s.Interval = 30 * time.Second
	}
	if s.Clock == nil {
		s.Clock = clock.RealClock{}
	}
	for {
		err := s.Round(ctx)
		for apierrors.IsConflict(err) && ctx.Err() == nil {
			err = s.Round(ctx) // another replica wrote first: take its keys
		}
		if err != nil && ctx.Err() == nil {
			s.log().Error("jwt signing keys: the round failed; the keys in force stay", "secret", s.Namespace+"/"+s.Name, "error", err)
		}
		if s.Result != nil {
			s.Result(err)
		}
		wait := s.Interval
		if at := NextChange(s.Ring.Keys(), s.Ring.Policy()); !at.IsZero() {
			// A second late, so the round finds the change due.
			wait = min(wait, max(at.Sub(s.now())+time.Second, time.Second))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.Clock.After(wait):
		}
	}
}

// Round is one read, decide, write.
func (s *Syncer) Round(ctx context.Context) error {
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// Empty, so that two replicas creating it at once agree; the keys
		// go in by the conditional update below.
		sec, err = secrets.Apply(ctx, corev1ac.Secret(s.Name, s.Namespace).WithType(corev1.SecretTypeOpaque).
			WithLabels(map[string]string{"app.kubernetes.io/part-of": "meshid"}), metav1.ApplyOptions{FieldManager: "meshid-ca"})
		if err == nil {
			s.log().Info("jwt signing keys: created the key Secret", "secret", s.Namespace+"/"+s.Name)
		}
	}
	if err != nil {
		return fmt.Errorf("jwtkey: read Secret %s/%s (meshid-ca needs get, update, create and patch on it): %w", s.Namespace, s.Name, err)
	}
	keys, err := Unmarshal(sec.Data[DataKey])
	if err != nil {
		return err
	}
	next, changed, err := Next(keys, s.now(), s.Ring.Policy(), Generate)
	if err != nil {
		return err
	}
	if changed {
		data, err := Marshal(next)
		if err != nil {
			return err
		}
		upd := sec.DeepCopy()
		if upd.Data == nil {
			upd.Data = map[string][]byte{}
		}
		upd.Data[DataKey] = data
		upd.Type = corev1.SecretTypeOpaque
		if _, err := secrets.Update(ctx, upd, metav1.UpdateOptions{FieldManager: "meshid-ca"}); err != nil {
			return fmt.Errorf("jwtkey: update Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		s.log().Info("jwt signing keys updated", "secret", s.Namespace+"/"+s.Name, "keys", len(next))
	}
	s.Ring.Set(next)
	return nil
}

func (s *Syncer) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Syncer) now() time.Time {
	if s.Clock == nil {
		return clock.RealClock{}.Now()
	}
	return s.Clock.Now()
}
