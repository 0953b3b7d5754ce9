package anchor_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/rotation/anchor"
)

func TestStuck(t *testing.T) {
	deadline := w.now.Add(time.Minute)
	waiting := func(s *anchor.State) {
		s.Wait = &anchor.StoredWait{Goal: "bundle 0123", Since: w.now.Add(-9 * time.Minute), Deadline: deadline}
	}
	failed := func(s *anchor.State) {
		s.Failed = &anchor.StoredFailure{Reason: anchor.ReasonTimeout, Detail: "stage Add did not converge within 10m0s", At: w.now.Add(-time.Hour)}
	}
	tests := []struct {
		name string
		st   *anchor.State
		at   time.Time
		want string // "": not stuck
	}{
		{name: "none", st: nil, at: w.now},
		{name: "running, no wait", st: w.state(anchor.Add), at: w.now.Add(time.Hour)},
		{name: "within its wait", st: w.state(anchor.Add, waiting), at: deadline.Add(-time.Nanosecond)},
		{name: "past its wait", st: w.state(anchor.Add, waiting), at: deadline, want: "stage Add has waited for bundle 0123 since 2026-12-02T09:51:00Z, past its stage timeout (2026-12-02T10:01:00Z), and no run is advancing it"},
		{name: "failed", st: w.state(anchor.Reissue, failed), at: w.now, want: "the last run failed at 2026-12-02T09:00:00Z (timeout): stage Add did not converge within 10m0s"},
		{name: "failed, then finished", st: w.state(anchor.Done, failed, waiting), at: deadline.Add(time.Hour)},
		{name: "aborted", st: w.state(anchor.Aborted, waiting), at: deadline.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why, stuck := anchor.Stuck(tt.st, tt.at)
			if stuck != (tt.want != "") || why != tt.want {
				t.Fatalf("Stuck = %v, %q; want %q", stuck, why, tt.want)
			}
		})
	}
}

// TestRotatorRecordsWaitAndFailure: a run records the wait it is in, so
// that status can tell when no run is left to end it; a timeout is recorded
// as a failure (status: stuck), an interruption is not, and a new run
// clears both.
func TestRotatorRecordsWaitAndFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = true })
		ctx, cancel := context.WithCancel(h.ctx)
		errc := background(func() error {
			return h.rotator(anchor.Config{StageTimeout: 10 * time.Second}).Start(ctx, h.start(false, false))
		})
		synctest.Wait()
		st := h.status()
		if st.State.Wait == nil || st.State.Wait.Goal != w.goalBundle(w.both) || !st.State.Wait.Deadline.Equal(w.now.Add(10*time.Second)) || st.Stuck != "" {
			t.Fatalf("while waiting: wait %+v, stuck %q", st.State.Wait, st.Stuck)
		}
		cancel() // the operator's Ctrl-C: not a failure
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "interrupted at stage Add") {
			t.Fatalf("Start = %v, want interrupted", err)
		}
		if st := h.status(); st.State.Failed != nil || st.Stuck != "" {
			t.Fatalf("interrupted: failed %+v, stuck %q", st.State.Failed, st.Stuck)
		}
		h.clock.Step(10 * time.Second)
		if st := h.status(); !strings.Contains(st.Stuck, "past its stage timeout") {
			t.Fatalf("past the recorded wait's deadline, with no run: stuck %q", st.Stuck)
		}

		errc = background(func() error { return h.rotator(anchor.Config{StageTimeout: 10 * time.Second}).Resume(h.ctx) })
		synctest.Wait()
		if st := h.status(); st.Stuck != "" || st.State.Wait == nil || !st.State.Wait.Since.Equal(h.clock.Now()) {
			t.Fatalf("resumed: stuck %q, wait %+v; want a fresh wait", st.Stuck, st.State.Wait)
		}
		h.clock.Step(10 * time.Second)
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "did not converge within 10s") {
			t.Fatalf("Resume = %v, want the stage timeout", err)
		}
		st = h.status()
		if st.State.Failed == nil || st.State.Failed.Reason != anchor.ReasonTimeout || !strings.Contains(st.Stuck, "the last run failed") {
			t.Fatalf("after the timeout: failed %+v, stuck %q", st.State.Failed, st.Stuck)
		}

		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = false })
		if err := h.rotator(anchor.Config{}).Resume(h.ctx); err != nil {
			t.Fatalf("resume: %v\n%s", err, h.out)
		}
		if st := h.status(); st.State.Failed != nil || st.Stuck != "" {
			t.Fatalf("done: failed %+v, stuck %q", st.State.Failed, st.Stuck)
		}
	})
}

// TestRotatorEvents: with Config.Events each progress line is an event
// with the stage it was said at, and nothing goes to Out.
func TestRotatorEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		var events []anchor.Event
		r, err := anchor.New(anchor.Config{Client: h.client, Namespace: ns, Clock: h.clock, Out: h.out, Events: func(e anchor.Event) { events = append(events, e) }})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(h.ctx, h.start(false, false)); err != nil {
			t.Fatal(err)
		}
		if h.out.String() != "" {
			t.Fatalf("printed with Events set:\n%s", h.out)
		}
		stages := map[string]anchor.Stage{}
		for _, e := range events {
			stages[e.Message] = e.Stage
			if e.Time.IsZero() {
				t.Fatalf("event without a time: %+v", e)
			}
		}
		for msg, stage := range map[string]anchor.Stage{introReissue: anchor.Reissue, "rotation started (new anchor " + w.newAnchor.Fingerprint()[:16] + ", staged)": anchor.Add} {
			if got, ok := stages[msg]; !ok || got != stage {
				t.Errorf("event %q at stage %q (seen %v), want %s", msg, got, ok, stage)
			}
		}
		last := events[len(events)-1]
		if last.Stage != anchor.Done || !strings.HasPrefix(last.Message, "  ") {
			t.Errorf("last event %+v, want a timing line at stage Done", last)
		}
	})
}

// TestCheckStart: what a start refuses before it looks at the new anchor,
// so that a generated anchor is never made for a refusal.
func TestCheckStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		r := h.rotator(anchor.Config{})
		if err := r.CheckStart(h.ctx, anchor.StartParams{}); err != nil {
			t.Fatalf("a staged start on a healthy install: %v", err)
		}
		if err := r.CheckStart(h.ctx, anchor.StartParams{Emergency: true}); err == nil || !strings.Contains(err.Error(), "are healthy (meshid check passes)") {
			t.Fatalf("an emergency on a healthy install: %v", err)
		}
		if err := r.CheckStart(h.ctx, anchor.StartParams{Emergency: true, Force: true}); err != nil {
			t.Fatalf("a forced emergency: %v", err)
		}
		if _, err := h.client.CoreV1().Secrets(ns).Create(h.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: anchor.KeysSecret},
			Data: map[string][]byte{"new-anchor.key": []byte("k")}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := "Secret " + ns + "/" + anchor.KeysSecret + " still holds a rotation's keys (new-anchor.key), and a new rotation would replace them"
		if err := r.CheckStart(h.ctx, anchor.StartParams{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("over a rotation's keys: %v, want %q", err, want)
		}
		if err := r.Start(h.ctx, h.start(false, false)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Start over a rotation's keys: %v, want %q", err, want)
		}
		if s, _ := h.client.CoreV1().Secrets(ns).Get(h.ctx, anchor.KeysSecret, metav1.GetOptions{}); string(s.Data["new-anchor.key"]) != "k" {
			t.Fatal("the refused start replaced the keys")
		}
	})
}

// TestForceAbort: a rotation interrupted in stage Reissue is removed with
// ForceAbort: the state is gone, the bundle (both anchors, the re-issue
// window), the issuer (from the new anchor) and the saved keys are left
// as they were, and Leftovers says so.
func TestForceAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		r := h.rotator(anchor.Config{})
		if _, err := r.ForceAbort(h.ctx); err == nil || !strings.Contains(err.Error(), "no rotation is stored") {
			t.Fatalf("ForceAbort with nothing stored: %v", err)
		}
		ctx, cancel := context.WithCancel(h.ctx)
		h.out.on(introReissue, cancel)
		if err := r.Start(ctx, h.start(false, false)); err == nil {
			t.Fatal("not interrupted")
		}
		cancel()
		before, window := h.bundle()
		left, err := h.rotator(anchor.Config{}).ForceAbort(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.CoreV1().ConfigMaps(ns).Get(h.ctx, anchor.StateConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the state is still there (%v)", err)
		}
		if after, win := h.bundle(); after.SHA256() != before.SHA256() || win != window || after.SHA256() != w.both.SHA256() {
			t.Fatal("ForceAbort changed the bundle")
		}
		if left.Removed != anchor.Reissue || left.Bundle.SHA256 != w.both.SHA256() || left.Bundle.ReissueWindow != "30s" || len(left.Bundle.Anchors) != 2 {
			t.Fatalf("leftovers %+v", left)
		}
		roles := map[string]string{}
		for _, a := range left.Bundle.Anchors {
			roles[a.SHA256] = a.Role
		}
		if roles[w.oldAnchor.Fingerprint()] != "old" || roles[w.newAnchor.Fingerprint()] != "new" {
			t.Fatalf("anchor roles %v", roles)
		}
		iss := h.issuer()
		if left.Issuer.SHA256 != iss.Fingerprint() || left.Issuer.ChainsTo != "new anchor "+anchor12(w.newAnchor) {
			t.Fatalf("issuer left %+v, want %s from the new anchor", left.Issuer, iss.Fingerprint())
		}
		if strings.Join(left.Keys, ",") != "new-anchor.key,old-issuer.crt,old-issuer.key" || left.KeysSecret != ns+"/"+anchor.KeysSecret {
			t.Fatalf("keys left %q in %s", left.Keys, left.KeysSecret)
		}
		if _, err := h.client.CoreV1().Secrets(ns).Get(h.ctx, anchor.KeysSecret, metav1.GetOptions{}); err != nil {
			t.Fatalf("the saved keys are gone: %v", err)
		}
		if st := h.status(); st.State != nil {
			t.Fatalf("status after ForceAbort: %+v", st.State)
		}
		// Only the keys are left: ForceAbort says so again.
		if left, err := h.rotator(anchor.Config{}).ForceAbort(h.ctx); err != nil || left.Removed != "" || len(left.Keys) != 3 {
			t.Fatalf("ForceAbort again: %+v, %v", left, err)
		}
	})
}

// TestForceAbortBadState: a state that does not parse is removed all the
// same.
func TestForceAbortBadState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		if _, err := h.client.CoreV1().ConfigMaps(ns).Create(h.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: anchor.StateConfigMap},
			Data: map[string]string{anchor.StateKey: "{not json"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := h.rotator(anchor.Config{}).Abort(h.ctx); err == nil {
			t.Fatal("abort of a state that does not parse")
		}
		left, err := h.rotator(anchor.Config{}).ForceAbort(h.ctx)
		if err != nil || left.Removed != "" || left.Bundle.SHA256 != w.old.SHA256() || left.Bundle.Anchors[0].Role != "" || left.Issuer.ChainsTo != "anchor "+anchor12(w.oldAnchor) {
			t.Fatalf("ForceAbort = %+v, %v", left, err)
		}
		if _, err := h.client.CoreV1().ConfigMaps(ns).Get(h.ctx, anchor.StateConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the state is still there (%v)", err)
		}
	})
}
