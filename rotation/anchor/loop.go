package anchor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
)

// run drives st to a finished stage: it observes the cluster, asks Next
// what to do, does it, and looks again; a wait lasts until a ConfigMap or
// Secret of the namespace changes, the wait's deadline passes, or
// Config.Poll has gone by (a replica going stale or a proxy falling silent
// changes the view with no write).
func (r *Rotator) run(ctx context.Context, st *State) error {
	saved, err := r.loadKeys(ctx)
	if err != nil {
		return err
	}
	if st.Failed != nil || st.Wait != nil {
		// A new run: what the last one failed on or waited for is past.
		st.Failed, st.Wait = nil, nil
		if err := r.save(ctx, st); err != nil {
			return err
		}
	}
	ch := r.changes()
	defer ch.stop()
	m := newMemo(st)
	for !st.Stage.Finished() {
		r.stage = st.Stage
		if ctx.Err() != nil {
			return r.stop(ctx, st, interrupted(st, ctx.Err()))
		}
		m.at(st)
		o, err := r.observe(ctx, st, saved, m)
		if err != nil {
			return r.stop(ctx, st, err)
		}
		d := Next(o)
		if d.Intro != "" && d.Intro != m.intro {
			r.say("%s", d.Intro)
		}
		m.intro = d.Intro
		for _, met := range d.Met {
			if !m.met[met.Goal] {
				m.met[met.Goal] = true
				r.say("%s", met.Line)
			}
		}
		if d.Message != "" && d.Message != m.message {
			r.say("stage %s: %s", st.Stage, d.Message)
			m.message, st.Message = d.Message, d.Message
			if err := r.save(ctx, st); err != nil {
				return err
			}
		}
		switch d.Kind {
		case Wait:
			if m.waiting.Goal != d.Goal {
				m.waiting = Waiting{Goal: d.Goal, Since: o.Now}
			}
			if w := (StoredWait{Goal: d.Goal, Since: m.waiting.Since, Deadline: d.Deadline}); st.Wait == nil || *st.Wait != w {
				// Recorded, so that status can tell a wait no run is
				// left to end (see Stuck).
				st.Wait = &w
				if err := r.save(ctx, st); err != nil {
					return err
				}
			}
			if err := r.pause(ctx, ch, d.Deadline); err != nil {
				return r.stop(ctx, st, interrupted(st, err))
			}
		case Act:
			if err := r.apply(ctx, st, &saved, m, d.Action); err != nil {
				return r.stop(ctx, st, err)
			}
		case Advance:
			st.advance(r.clock.Now(), d.Stage)
			if err := r.save(ctx, st); err != nil {
				return err
			}
		case Fail:
			return r.stop(ctx, st, d.Failure)
		default:
			return r.stop(ctx, st, fmt.Errorf("anchor: no decision at stage %s", st.Stage))
		}
	}
	r.stage = st.Stage
	if err := r.deleteKeys(ctx); err != nil {
		return err
	}
	r.say("rotation %s in %s", strings.ToLower(string(st.Stage)), r.clock.Now().Sub(st.Started).Round(time.Millisecond))
	for _, s := range Stages {
		if d, ok := st.Timings[s]; ok {
			r.say("  %-13s %s", s, d)
		}
	}
	return nil
}

func interrupted(st *State, err error) error {
	return &interruption{fmt.Errorf("anchor: interrupted at stage %s: %w (run resume to continue)", st.Stage, err)}
}

// interruption is a run stopped from outside (Ctrl-C, a deadline): not a
// failure of the rotation.
type interruption struct{ error }

func (i *interruption) Unwrap() error { return i.error }

// stop records why the run stopped in the stored state (as a failure,
// unless it was interrupted), and returns it.
func (r *Rotator) stop(ctx context.Context, st *State, err error) error {
	st.Message = err.Error()
	var in *interruption
	if !errors.As(err, &in) {
		f := &StoredFailure{Reason: ReasonError, Detail: err.Error(), At: r.clock.Now()}
		var why *Failure
		if errors.As(err, &why) {
			f.Reason = why.Reason
		}
		st.Failed = f
	}
	if serr := r.save(context.WithoutCancel(ctx), st); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// memo is what a run remembers between observations: the proxies it has
// seen, and, for the stage it is at, what it waits for, what it asked of
// cert-manager and what it has printed.
type memo struct {
	seen map[fleet.Key]fleet.Proxy

	stage    Stage
	aborting bool
	waiting  Waiting
	asked    bool
	intro    string
	message  string
	met      map[string]bool
}

func newMemo(st *State) *memo {
	m := &memo{seen: map[fleet.Key]fleet.Proxy{}}
	m.reset(st)
	return m
}

// at starts afresh what the memo keeps per stage when st has moved on.
func (m *memo) at(st *State) {
	if st.Stage != m.stage || st.Aborting != m.aborting {
		m.reset(st)
	}
}

func (m *memo) reset(st *State) {
	m.stage, m.aborting = st.Stage, st.Aborting
	m.waiting, m.asked, m.intro, m.message, m.met = Waiting{}, false, "", "", map[string]bool{}
}

// remember adds to v every proxy this run has seen that dropped out of the
// view (its replica restarted or went quiet): it still counts until it has
// been gone for fleet.Forget.
//
// A stand-in for a shard that could not be read is not remembered: it
// holds back only while the shard is unread.
func (m *memo) remember(v fleet.View, now time.Time) fleet.View {
	var unread []fleet.Proxy
	for _, p := range v.Proxies {
		if p.Unread != "" {
			unread = append(unread, p)
			continue
		}
		m.seen[p.Key()] = p
	}
	v.Proxies = unread
	for k, p := range m.seen {
		if now.Sub(p.LastSeen) > fleet.Forget {
			delete(m.seen, k)
			continue
		}
		v.Proxies = append(v.Proxies, p)
	}
	slices.SortFunc(v.Proxies, func(a, b fleet.Proxy) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Instance, b.Instance)
	})
	return v
}

// observe reads what Next looks at.
func (r *Rotator) observe(ctx context.Context, st *State, saved Saved, m *memo) (Observed, error) {
	o := Observed{
		Now: r.clock.Now(), State: st, Saved: saved, Waiting: m.waiting, AskedCertManager: m.asked,
		Timeout: r.cfg.StageTimeout, IssuerTTL: r.cfg.IssuerTTL,
	}
	cm, err := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		o.BundleErr = fmt.Errorf("anchor: read the trust bundle ConfigMap %s/%s: %w", r.cfg.Namespace, manifest.BundleConfigMap, err)
	case err != nil:
		return o, fmt.Errorf("anchor: read the trust bundle ConfigMap %s/%s: %w", r.cfg.Namespace, manifest.BundleConfigMap, err)
	default:
		o.Bundle, o.BundleErr = bundleData(cm)
		o.Window = cm.Data[bundle.ReissueWindowKey]
	}
	secrets := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace)
	s, err := secrets.Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		o.IssuerErr = err
	case err != nil:
		return o, fmt.Errorf("anchor: read the issuer Secret %s: %w", manifest.IssuerSecret, err)
	default:
		o.IssuerCert, o.IssuerKey = s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	}
	if st.CertManager {
		if s, err := secrets.Get(ctx, manifest.AnchorSecret, metav1.GetOptions{}); err != nil {
			o.CertManagerAnchorErr = err
		} else {
			o.CertManagerAnchor, o.CertManagerAnchorKey = s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		}
	}
	view, err := r.fleet(ctx)
	if err != nil {
		return o, err
	}
	o.Fleet = m.remember(view, o.Now)
	return o, nil
}

// apply does a.
func (r *Rotator) apply(ctx context.Context, st *State, saved *Saved, m *memo, a Action) error {
	switch a := a.(type) {
	case PublishBundle:
		return r.setBundle(ctx, a.PEM, a.Window)
	case BackupIssuer:
		saved.OldIssuerCert, saved.OldIssuerKey = a.Cert, a.Key
		return r.saveKeys(ctx, *saved)
	case BackupCertManagerAnchor:
		saved.OldAnchorCert, saved.OldAnchorKey = a.Cert, a.Key
		return r.saveKeys(ctx, *saved)
	case WriteIssuer:
		anchor, err := issuer.Parse(a.AnchorCert, a.AnchorKey)
		if err != nil {
			return fmt.Errorf("anchor: %w", err)
		}
		next, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "meshid issuer", NotBefore: a.NotBefore, TTL: a.TTL, MaxPathLenZero: true})
		if err != nil {
			return err
		}
		key, err := next.KeyPEM()
		if err != nil {
			return err
		}
		r.say("stage %s: writing an issuer from the new anchor (%s) to Secret %s", st.Stage, next.Fingerprint()[:12], manifest.IssuerSecret)
		return r.putSecret(ctx, manifest.IssuerSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: next.CertPEM(), corev1.TLSPrivateKeyKey: key})
	case RestoreIssuer:
		return r.putSecret(ctx, manifest.IssuerSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: a.Cert, corev1.TLSPrivateKeyKey: a.Key})
	case GiveCertManagerAnchor:
		r.say("stage %s: giving cert-manager the anchor (Secret %s)", st.Stage, manifest.AnchorSecret)
		return r.putSecret(ctx, manifest.AnchorSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: a.Cert, corev1.TLSPrivateKeyKey: a.Key})
	case AskCertManager:
		r.say("stage %s: asking cert-manager to re-issue %s", st.Stage, manifest.IssuerSecret)
		if err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Delete(ctx, manifest.IssuerSecret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("anchor: delete Secret %s for cert-manager to re-issue it: %w", manifest.IssuerSecret, err)
		}
		m.asked = true
		return nil
	case RecordIssuer:
		st.NewIssuerSHA256 = a.SHA256
		return r.save(ctx, st)
	}
	return fmt.Errorf("anchor: unknown action %T", a)
}

// pause waits until a ConfigMap or Secret of the namespace changes, the
// clock passes deadline, or Config.Poll has gone by.
func (r *Rotator) pause(ctx context.Context, ch *changes, deadline time.Time) error {
	ch.arm(ctx)
	d := min(deadline.Sub(r.clock.Now()), r.cfg.Poll)
	if d <= 0 {
		return nil
	}
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
	case ev, ok := <-ch.events(0):
		ch.got(0, ev, ok)
	case ev, ok := <-ch.events(1):
		ch.got(1, ev, ok)
	}
	ch.drain()
	return nil
}

// changes watches the namespace's ConfigMaps (fleet reports, the bundle,
// the state) and Secrets (the issuer, cert-manager's anchor). A watch that
// ends is opened again at the next pause; one that cannot be opened (no
// RBAC to watch) leaves the run to Config.Poll.
type changes struct {
	open   [2]func(context.Context) (watch.Interface, error)
	w      [2]watch.Interface
	broken [2]bool
}

func (r *Rotator) changes() *changes {
	cms, secrets := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace), r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace)
	return &changes{open: [2]func(context.Context) (watch.Interface, error){
		func(ctx context.Context) (watch.Interface, error) { return cms.Watch(ctx, metav1.ListOptions{}) },
		func(ctx context.Context) (watch.Interface, error) { return secrets.Watch(ctx, metav1.ListOptions{}) },
	}}
}

// arm opens the watches that are not open.
func (c *changes) arm(ctx context.Context) {
	for i := range c.w {
		if c.w[i] != nil || c.broken[i] {
			continue
		}
		w, err := c.open[i](ctx)
		if err != nil {
			c.broken[i] = true
			continue
		}
		c.w[i] = w
	}
}

// events is watch i's channel; nil (never ready) when it is not open.
func (c *changes) events(i int) <-chan watch.Event {
	if c.w[i] == nil {
		return nil
	}
	return c.w[i].ResultChan()
}

// got takes an event of watch i: a closed channel or an error ends it.
func (c *changes) got(i int, ev watch.Event, ok bool) {
	if !ok || ev.Type == watch.Error {
		c.w[i].Stop()
		c.w[i] = nil
	}
}

// drain takes every event already delivered: one look covers them all.
func (c *changes) drain() {
	for i := range c.w {
		for more := true; more && c.w[i] != nil; {
			select {
			case ev, ok := <-c.w[i].ResultChan():
				c.got(i, ev, ok)
			default:
				more = false
			}
		}
	}
}

func (c *changes) stop() {
	for i, w := range c.w {
		if w != nil {
			w.Stop()
			c.w[i] = nil
		}
	}
}
