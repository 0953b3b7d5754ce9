package anchor_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/anchor"
)

// harness is a fake cluster as meshid install leaves it, a fleet that
// follows it, a fake clock and the rotator's output. Make it inside a
// synctest bubble: synctest.Wait then says when the rotator and the fleet
// have nothing left to do but wait.
type harness struct {
	t      *testing.T
	ctx    context.Context
	client *fake.Clientset
	clock  *clocktesting.FakeClock
	sim    *sim
	out    *lines
}

type setup struct {
	certManager bool
	issuer      *issuer.KeyPair // the issuer in place; nil means w.oldIssuer
}

func newHarness(t *testing.T, s setup) *harness {
	if s.issuer == nil {
		s.issuer = w.oldIssuer
	}
	// A bound on the whole test: in the bubble it fires only when
	// everything is blocked, i.e. when the rotation is stuck.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, client: newClient(installed(s.issuer, s.certManager)...), clock: clocktesting.NewFakeClock(w.now), out: &lines{}}
	h.sim = newSim(t, h.client, h.clock, s.issuer, s.certManager)
	done := make(chan struct{})
	go func() { defer close(done); h.sim.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
	return h
}

func (h *harness) rotator(cfg anchor.Config) *anchor.Rotator {
	cfg.Client, cfg.Namespace, cfg.Clock, cfg.Out = h.client, ns, h.clock, h.out
	r, err := anchor.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) start(cm, emergency bool) anchor.StartParams {
	return anchor.StartParams{NewAnchorCertPEM: w.newAnchor.CertPEM(), NewAnchorKeyPEM: keyPEM(w.newAnchor), CertManager: cm, Emergency: emergency}
}

// background runs f on its own goroutine; the channel gets its error.
func background(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return errc
}

func (h *harness) bundle() (*bundle.Bundle, string) {
	h.t.Helper()
	cm, err := h.client.CoreV1().ConfigMaps(ns).Get(h.ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	b, err := bundle.Parse([]byte(cm.Data[bundle.Key]))
	if err != nil {
		h.t.Fatal(err)
	}
	return b, cm.Data[bundle.ReissueWindowKey]
}

func (h *harness) issuer() *issuer.KeyPair {
	h.t.Helper()
	s, err := h.client.CoreV1().Secrets(ns).Get(h.ctx, manifest.IssuerSecret, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	kp, err := issuer.Parse(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		h.t.Fatal(err)
	}
	return kp
}

func (h *harness) status() *anchor.Status {
	h.t.Helper()
	st, err := h.rotator(anchor.Config{}).Status(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// done checks a rotation that finished on the new anchor: the bundle holds
// it alone, the issuer and every leaf come from it, the keys are gone,
// and the state says Done.
func (h *harness) done() {
	h.t.Helper()
	b, window := h.bundle()
	if b.SHA256() != w.newOnly.SHA256() || window != "" {
		h.t.Errorf("the bundle holds %d anchors (window %q), want the new anchor alone", len(b.Anchors()), window)
	}
	if err := h.issuer().Verify(w.newOnly, h.clock.Now()); err != nil {
		h.t.Errorf("the issuer: %v", err)
	}
	if _, err := h.client.CoreV1().Secrets(ns).Get(h.ctx, anchor.KeysSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		h.t.Errorf("the rotation's keys are still there (%v)", err)
	}
	st := h.status()
	if st.State == nil || st.State.Stage != anchor.Done {
		h.t.Fatalf("status: %+v", st.State)
	}
	for _, p := range st.Fleet.Proxies {
		if p.BundleSHA256 != w.newOnly.SHA256() || p.LeafAnchorSHA256 != w.newAnchor.Fingerprint() {
			h.t.Errorf("proxy %s holds bundle %.12s with a leaf from %.12s", p.ID, p.BundleSHA256, p.LeafAnchorSHA256)
		}
	}
}

// TestRotatorStart runs a whole staged rotation: every stage advances on
// what the fleet reports, and every wait ends on a change of the cluster,
// not on a timer: the fake clock never moves.
func TestRotatorStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		if err := h.rotator(anchor.Config{}).Start(h.ctx, h.start(false, false)); err != nil {
			t.Fatalf("%v\n%s", err, h.out)
		}
		if missing := h.out.inOrder(
			"rotation started (new anchor "+w.newAnchor.Fingerprint()[:16]+", staged)",
			introAdd,
			"stage Add: converged on bundle "+fp12(w.both)+" (3 proxies, 2 CA replicas)",
			"stage SwitchIssuer: writing an issuer from the new anchor (",
			"stage SwitchIssuer: converged on "+w.goalIssuer(w.newAnchor)+" (3 proxies, 2 CA replicas)",
			introReissue,
			"stage Reissue: converged on "+w.goalLeaves(w.newAnchor),
			introRemove,
			"stage Remove: converged on bundle "+fp12(w.newOnly),
			"rotation done in 0s",
			"  Add           0s",
			"  Remove        0s",
		); missing != "" {
			t.Errorf("no line %q in order in:\n%s", missing, h.out)
		}
		h.done()
		if !h.clock.Now().Equal(w.now) {
			t.Errorf("the clock moved to %s", h.clock.Now())
		}
	})
}

func TestRotatorCertManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{certManager: true})
		if err := h.rotator(anchor.Config{}).Start(h.ctx, h.start(true, false)); err != nil {
			t.Fatalf("%v\n%s", err, h.out)
		}
		if missing := h.out.inOrder(
			introAdd,
			"stage SwitchIssuer: giving cert-manager the anchor (Secret meshid-anchor)",
			"stage SwitchIssuer: asking cert-manager to re-issue meshid-issuer",
			"stage SwitchIssuer: converged on "+w.goalIssuer(w.newAnchor),
			"rotation done",
		); missing != "" {
			t.Errorf("no line %q in order in:\n%s", missing, h.out)
		}
		if strings.Contains(h.out.String(), "writing an issuer") {
			t.Errorf("wrote an issuer itself in cert-manager mode:\n%s", h.out)
		}
		h.done()
		s, err := h.client.CoreV1().Secrets(ns).Get(h.ctx, manifest.AnchorSecret, metav1.GetOptions{})
		if err != nil || string(s.Data[corev1.TLSCertKey]) != string(w.newOnly.PEM()) {
			t.Errorf("cert-manager's anchor Secret does not hold the new anchor (%v)", err)
		}
	})
}

// TestRotatorEmergency: with the issuer expired, the emergency rotation
// publishes the new anchor and an issuer from it at once; while the old
// material is healthy it refuses without --force.
func TestRotatorEmergency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		err := h.rotator(anchor.Config{}).Start(h.ctx, h.start(false, true))
		if err == nil || !strings.Contains(err.Error(), "are healthy (meshid check passes)") {
			t.Fatalf("emergency while healthy: %v", err)
		}
		if b, _ := h.bundle(); b.SHA256() != w.old.SHA256() {
			t.Error("the refused emergency changed the bundle")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{issuer: w.expiredOldIssuer})
		if err := h.rotator(anchor.Config{}).Start(h.ctx, h.start(false, true)); err != nil {
			t.Fatalf("%v\n%s", err, h.out)
		}
		if missing := h.out.inOrder(
			"rotation started (new anchor "+w.newAnchor.Fingerprint()[:16]+", emergency)",
			introEmergency,
			"stage SwitchIssuer: writing an issuer from the new anchor",
			introReissue,
			"rotation done",
		); missing != "" {
			t.Errorf("no line %q in order in:\n%s", missing, h.out)
		}
		if strings.Contains(h.out.String(), "stage Add") || strings.Contains(h.out.String(), "stage Remove") {
			t.Errorf("an emergency rotation went through Add or Remove:\n%s", h.out)
		}
		h.done()
	})
}

// TestRotatorStageTimeout: a proxy cut off from the CA holds stage Add;
// when the clock passes the stage timeout the run stops naming it, status
// names it, and once it is back, resume completes.
func TestRotatorStageTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen, p.LastSeen = true, w.now.Add(-40*time.Second) })
		errc := background(func() error {
			return h.rotator(anchor.Config{StageTimeout: 10 * time.Second}).Start(h.ctx, h.start(false, false))
		})
		synctest.Wait()
		waiting := "stage Add: 4/5 converged on bundle " + fp12(w.both) + "; waiting for " + spiffeID("db") + " (db-5c2a1) silent for 40s: cut off from the CA?"
		if h.out.inOrder(waiting) != "" {
			t.Fatalf("not waiting for the frozen proxy:\n%s", h.out)
		}
		h.clock.Step(9 * time.Second)
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("stopped before the stage timeout: %v", err)
		default:
		}
		h.clock.Step(time.Second)
		err := <-errc
		var f *anchor.Failure
		if !errors.As(err, &f) || f.Reason != anchor.ReasonTimeout ||
			!strings.HasPrefix(err.Error(), "anchor: stage Add did not converge within 10s: 4/5 converged") || !strings.Contains(err.Error(), spiffeID("db")) {
			t.Fatalf("after the stage timeout: %v", err)
		}
		st := h.status()
		if st.State.Stage != anchor.Add || st.State.Message != err.Error() {
			t.Errorf("status: stage %s, message %q", st.State.Stage, st.State.Message)
		}
		if len(st.Lagging) != 1 || !strings.HasPrefix(st.Lagging[0], spiffeID("db")) || st.Ready != 2 || st.Total != 3 {
			t.Errorf("status: %d/%d, lagging %q", st.Ready, st.Total, st.Lagging)
		}

		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = false })
		if err := h.rotator(anchor.Config{}).Resume(h.ctx); err != nil {
			t.Fatalf("resume: %v\n%s", err, h.out)
		}
		h.done()
	})
}

// TestRotatorRemembersProxies: a lagging proxy that drops out of the fleet
// view (its replica restarted) still holds the stage, until it has been
// gone for fleet.Forget.
func TestRotatorRemembersProxies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = true })
		errc := background(func() error { return h.rotator(anchor.Config{}).Start(h.ctx, h.start(false, false)) })
		synctest.Wait()
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.gone = true })
		synctest.Wait()
		if st := h.status(); len(st.Fleet.Proxies) != 2 {
			t.Fatalf("the fleet view still shows %d proxies", len(st.Fleet.Proxies))
		}
		select {
		case err := <-errc:
			t.Fatalf("the rotation went on without the proxy that dropped out: %v\n%s", err, h.out)
		default:
		}
		if h.out.inOrder("stage Add: converged") == "" {
			t.Fatalf("converged without the proxy that dropped out:\n%s", h.out)
		}
		h.clock.Step(5*time.Minute + time.Second)
		h.sim.sync(h.ctx) // the replicas publish again at the new time
		if err := <-errc; err != nil {
			t.Fatalf("%v\n%s", err, h.out)
		}
	})
}

// TestRotatorResume: a run interrupted in each stage is resumed by a new
// one, which finishes it.
func TestRotatorResume(t *testing.T) {
	for _, cm := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, setup{certManager: cm})
			run := func(ctx context.Context) error { return h.rotator(anchor.Config{}).Start(ctx, h.start(cm, false)) }
			for _, stage := range []string{"Add", "SwitchIssuer", "Reissue", "Remove"} {
				ctx, cancel := context.WithCancel(h.ctx)
				h.out.on("stage "+stage+":", cancel)
				err := run(ctx)
				cancel()
				if err == nil || !strings.Contains(err.Error(), "anchor: interrupted at stage "+stage) {
					t.Fatalf("interrupted in %s: %v\n%s", stage, err, h.out)
				}
				if st := h.status(); st.State.Stage != anchor.Stage(stage) || st.State.Message != err.Error() {
					t.Fatalf("status after the interruption in %s: stage %s, message %q", stage, st.State.Stage, st.State.Message)
				}
				run = h.rotator(anchor.Config{}).Resume
			}
			if err := run(h.ctx); err != nil {
				t.Fatalf("final resume: %v\n%s", err, h.out)
			}
			if h.out.inOrder("resuming at stage Remove", "rotation done") != "" {
				t.Errorf("output:\n%s", h.out)
			}
			h.done()
		})
	}
}

// TestRotatorAbort: a rotation interrupted in stage Reissue is aborted:
// the old issuer is back, every leaf comes from it, the bundle holds the
// old anchor alone. An abort interrupted after it published the old bundle
// is resumed to the end.
func TestRotatorAbort(t *testing.T) {
	for _, cm := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, setup{certManager: cm})
			ctx, cancel := context.WithCancel(h.ctx)
			h.out.on(introReissue, cancel)
			if err := h.rotator(anchor.Config{}).Start(ctx, h.start(cm, false)); err == nil {
				t.Fatal("not interrupted")
			}
			cancel()
			ctx, cancel = context.WithCancel(h.ctx)
			defer cancel()
			h.out.on(introOldBack, cancel)
			if err := h.rotator(anchor.Config{}).Abort(ctx); err == nil || !strings.Contains(err.Error(), "interrupted at stage Reissue") {
				t.Fatalf("abort, interrupted: %v\n%s", err, h.out)
			}
			if err := h.rotator(anchor.Config{}).Resume(h.ctx); err != nil {
				t.Fatalf("resume the abort: %v\n%s", err, h.out)
			}
			if missing := h.out.inOrder("aborting from stage Reissue", introRestore, introOldBack, "resuming at stage Reissue (aborting)", "rotation aborted"); missing != "" {
				t.Errorf("no line %q in order in:\n%s", missing, h.out)
			}
			if b, window := h.bundle(); b.SHA256() != w.old.SHA256() || window != "" {
				t.Errorf("the bundle holds %d anchors, window %q; want the old bundle", len(b.Anchors()), window)
			}
			iss := h.issuer()
			if err := iss.Verify(w.old, h.clock.Now()); err != nil {
				t.Errorf("the issuer: %v", err)
			}
			if !cm && !iss.Cert.Equal(w.oldIssuer.Cert) {
				t.Errorf("the issuer is %s, want the old one back", iss.Cert.Subject)
			}
			st := h.status()
			if st.State.Stage != anchor.Aborted {
				t.Errorf("stage %s", st.State.Stage)
			}
			for _, p := range st.Fleet.Proxies {
				if p.BundleSHA256 != w.old.SHA256() || p.LeafAnchorSHA256 != w.oldAnchor.Fingerprint() {
					t.Errorf("proxy %s holds bundle %.12s with a leaf from %.12s", p.ID, p.BundleSHA256, p.LeafAnchorSHA256)
				}
			}
		})
	}
}

// TestRotatorWithoutWatch: when the operator may not watch ConfigMaps and
// Secrets, the run looks again every Config.Poll of the clock.
func TestRotatorWithoutWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		forbidden := func(a k8stesting.Action) (bool, watch.Interface, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: a.GetResource().Resource}, "", errors.New("no watch"))
		}
		h.client.PrependWatchReactor("*", forbidden)
		errc := background(func() error {
			return h.rotator(anchor.Config{Poll: time.Second}).Start(h.ctx, h.start(false, false))
		})
		polls := 0
		for ; polls < 100; polls++ {
			synctest.Wait()
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("%v\n%s", err, h.out)
				}
				h.done()
				return
			default:
			}
			h.clock.Step(time.Second)
			h.sim.sync(h.ctx)
		}
		t.Fatalf("not done after %d polls:\n%s", polls, h.out)
	})
}

// TestRotatorConflict: a second run that writes the state under the first
// one stops it.
func TestRotatorConflict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{})
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = true })
		errc := background(func() error { return h.rotator(anchor.Config{}).Start(h.ctx, h.start(false, false)) })
		synctest.Wait()
		cm, err := h.client.CoreV1().ConfigMaps(ns).Get(h.ctx, anchor.StateConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[anchor.StateKey] = strings.Replace(cm.Data[anchor.StateKey], `"message": "`, `"message": "another run: `, 1)
		if _, err := h.client.CoreV1().ConfigMaps(ns).Update(h.ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.sim.edit(h.ctx, "db", func(p *simProxy) { p.frozen = false }) // the stage converges: the run saves
		err = <-errc
		if err == nil || !strings.Contains(err.Error(), "another meshid rotate-anchor is running") {
			t.Fatalf("after a write under it: %v", err)
		}
	})
}
