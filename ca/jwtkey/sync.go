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
	// Namespace and Name locate the Secret, which must exist (meshid
	// install renders it; RBAC grants get and update on that name only).
	Namespace, Name string
	// Ring receives the set in force. Required.
	Ring *Ring
	// Interval between rounds; 0 means 30 s. A conflict retries at once.
	Interval time.Duration
	// Clock decides and paces; nil means the real clock.
	Clock clock.WithTicker
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
	tick := s.Clock.NewTicker(s.Interval)
	defer tick.Stop()
	for {
		err := s.Round(ctx)
		for apierrors.IsConflict(err) && ctx.Err() == nil {
			err = s.Round(ctx) // another replica wrote first: take its keys
		}
		if err != nil && ctx.Err() == nil {
			s.log().Error("jwt signing keys: the round failed; the keys in force stay", "secret", s.Namespace+"/"+s.Name, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

// Round is one read, decide, write.
func (s *Syncer) Round(ctx context.Context) error {
	sec, err := s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("jwtkey: read Secret %s/%s (meshid install creates it): %w", s.Namespace, s.Name, err)
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
		if _, err := s.Client.CoreV1().Secrets(s.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
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
