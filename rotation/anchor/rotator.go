package anchor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

// Names of the objects that hold a rotation.
const (
	StateConfigMap = "meshid-rotation"
	StateKey       = "state.json"
	KeysSecret     = "meshid-rotation"
)

// Keys in KeysSecret.
const (
	keyNewAnchor    = "new-anchor.key"
	keyOldIssuerCrt = "old-issuer.crt"
	keyOldIssuerKey = "old-issuer.key"
	keyOldAnchorCrt = "old-anchor.crt"
	keyOldAnchorKey = "old-anchor.key"
)

// Config configures a Rotator.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// Namespace of meshid-ca; "meshid" when empty.
	Namespace string
	// StageTimeout bounds how long one stage waits to converge; 0 means 10 min.
	StageTimeout time.Duration
	// Poll is how often convergence is checked; 0 means 2 s.
	Poll time.Duration
	// IssuerTTL is the lifetime of an issuer made from the new anchor (not
	// in cert-manager mode); 0 means the old issuer's lifetime.
	IssuerTTL time.Duration
	// Out receives progress lines; nil discards.
	Out io.Writer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Rotator runs rotations.
type Rotator struct {
	cfg     Config
	version string // resourceVersion of the state this run loaded or saved
	// seen holds every proxy (identity and instance) this run has seen, so
	// one that drops out of the fleet view (its replica restarted or went
	// quiet) still counts until it converges or has been gone for
	// fleet.Forget.
	seen map[fleet.Key]fleet.Proxy
}

// New returns a Rotator.
func New(cfg Config) (*Rotator, error) {
	if cfg.Client == nil {
		return nil, errors.New("anchor: Config.Client is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "meshid"
	}
	if cfg.StageTimeout <= 0 {
		cfg.StageTimeout = 10 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Rotator{cfg: cfg, seen: map[fleet.Key]fleet.Proxy{}}, nil
}

func (r *Rotator) say(format string, args ...any) {
	fmt.Fprintf(r.cfg.Out, "%s  %s\n", r.cfg.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// StartParams describe a new rotation.
type StartParams struct {
	// NewAnchorCertPEM and NewAnchorKeyPEM are the new anchor. Required.
	NewAnchorCertPEM, NewAnchorKeyPEM []byte
	// CertManager drives cert-manager's objects instead of writing the
	// issuer Secret.
	CertManager bool
	// Emergency installs the new anchor and issuer at once, for when the
	// old ones have expired: nothing waits on the old material.
	Emergency bool
	// ReissueWindow spreads stage Reissue's renewals; 0 means 30 s.
	ReissueWindow time.Duration
	// Force allows Emergency while the current anchor and issuer still
	// pass meshid check (an immediate switch breaks every peer that has not
	// picked the new anchor up yet).
	Force bool
}

// Start records a new rotation and runs it. It refuses while another
// rotation is unfinished.
func (r *Rotator) Start(ctx context.Context, p StartParams) error {
	if cur, err := r.load(ctx); err != nil {
		return err
	} else if cur != nil && !cur.Stage.Finished() {
		return fmt.Errorf("anchor: a rotation started at %s is at stage %s; resume or abort it first", cur.Started.UTC().Format(time.RFC3339), cur.Stage)
	}
	anchor, err := issuer.Parse(p.NewAnchorCertPEM, p.NewAnchorKeyPEM)
	if err != nil {
		return fmt.Errorf("anchor: the new anchor: %w", err)
	}
	now := r.cfg.Now()
	if err := anchor.CheckValidity(now); err != nil {
		return fmt.Errorf("anchor: the new anchor: %w", err)
	}
	oldBundle, err := r.bundlePEM(ctx)
	if err != nil && !p.Emergency {
		return err
	}
	if p.Emergency && !p.Force && r.check(ctx) == nil {
		return errors.New("anchor: the anchor and issuer in use are healthy (meshid check passes): an emergency switch would break every peer at once; run a staged rotation, or add --force")
	}
	if old, perr := bundle.Parse(oldBundle); perr == nil && old.Contains(anchor.Cert) && !p.Emergency {
		return errors.New("anchor: the new anchor is already in the bundle; start a rotation with an anchor that is not")
	}
	if p.ReissueWindow <= 0 {
		p.ReissueWindow = 30 * time.Second
	}
	st := &State{
		Stage: Add, Emergency: p.Emergency, CertManager: p.CertManager, Started: now, StageStarted: now,
		OldBundle: string(oldBundle), NewAnchor: string(bundle.Encode(anchor.Certificates()[:1])), ReissueWindow: p.ReissueWindow,
	}
	if p.Emergency {
		st.Stage = SwitchIssuer
	}
	keys := map[string][]byte{keyNewAnchor: p.NewAnchorKeyPEM}
	if err := r.saveKeys(ctx, keys); err != nil {
		return err
	}
	if err := r.save(ctx, st); err != nil {
		return err
	}
	r.say("rotation started (new anchor %s, %s)", anchor.Fingerprint()[:16], map[bool]string{true: "emergency", false: "staged"}[p.Emergency])
	return r.run(ctx, st)
}

// Resume continues the stored rotation from its stage.
func (r *Rotator) Resume(ctx context.Context) error {
	st, err := r.load(ctx)
	if err != nil {
		return err
	}
	if st == nil {
		return errors.New("anchor: no rotation to resume; start one")
	}
	if st.Stage.Finished() {
		r.say("the rotation is already %s", st.Stage)
		return r.deleteKeys(ctx)
	}
	r.say("resuming at stage %s%s", st.Stage, map[bool]string{true: " (aborting)", false: ""}[st.Aborting])
	return r.run(ctx, st)
}

// Abort goes back to the old anchor from any stage before Remove.
func (r *Rotator) Abort(ctx context.Context) error {
	st, err := r.load(ctx)
	if err != nil {
		return err
	}
	switch {
	case st == nil:
		return errors.New("anchor: no rotation to abort")
	case st.Stage.Finished():
		return fmt.Errorf("anchor: the rotation is already %s", st.Stage)
	case st.Stage == Remove:
		return errors.New("anchor: too late to abort: the old anchor is being removed and every leaf already comes from the new one; finish with resume")
	case st.Emergency:
		return errors.New("anchor: an emergency rotation cannot go back to the expired material; finish with resume")
	}
	st.Aborting = true
	st.Message = ""
	if err := r.save(ctx, st); err != nil {
		return err
	}
	r.say("aborting from stage %s", st.Stage)
	return r.run(ctx, st)
}

func (r *Rotator) run(ctx context.Context, st *State) error {
	keys, err := r.loadKeys(ctx)
	if err != nil {
		return err
	}
	for !st.Stage.Finished() {
		var err error
		if st.Aborting {
			err = r.abort(ctx, st, keys)
		} else {
			err = r.step(ctx, st, keys)
		}
		if err != nil {
			st.Message = err.Error()
			if serr := r.save(context.WithoutCancel(ctx), st); serr != nil {
				return errors.Join(err, serr)
			}
			return err
		}
		if err := r.save(ctx, st); err != nil {
			return err
		}
	}
	if err := r.deleteKeys(ctx); err != nil {
		return err
	}
	r.say("rotation %s in %s", strings.ToLower(string(st.Stage)), r.cfg.Now().Sub(st.Started).Round(time.Millisecond))
	for _, s := range Stages {
		if d, ok := st.Timings[s]; ok {
			r.say("  %-13s %s", s, d)
		}
	}
	return nil
}

// deleteKeys removes the rotation's Secret (anchor and issuer keys).
func (r *Rotator) deleteKeys(ctx context.Context) error {
	if err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Delete(ctx, KeysSecret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("anchor: delete the rotation's keys (Secret %s): %w", KeysSecret, err)
	}
	return nil
}

// step does the current forward stage, waits for it to converge and
// advances.
func (r *Rotator) step(ctx context.Context, st *State, keys map[string][]byte) error {
	both, err := bundle.Parse([]byte(st.OldBundle + st.NewAnchor))
	if err != nil && !st.Emergency {
		return fmt.Errorf("anchor: old + new bundle: %w", err)
	}
	newOnly, err := bundle.Parse([]byte(st.NewAnchor))
	if err != nil {
		return err
	}
	switch st.Stage {
	case Add:
		r.say("stage Add: publishing the bundle with both anchors (%.12s)", both.SHA256())
		if err := r.setBundle(ctx, both.PEM(), 0); err != nil {
			return err
		}
		if err := r.waitBundle(ctx, st, both.SHA256()); err != nil {
			return err
		}
		if err := r.check(ctx); err != nil {
			return err
		}
	case SwitchIssuer:
		if st.Emergency {
			r.say("stage SwitchIssuer (emergency): publishing the new anchor alone, at once")
			if err := r.setBundle(ctx, newOnly.PEM(), st.ReissueWindow); err != nil {
				return err
			}
		}
		fp, err := r.useAnchor(ctx, st, newOnly, []byte(st.NewAnchor), keys[keyNewAnchor], keys, true)
		if err != nil {
			return err
		}
		st.NewIssuerSHA256 = fp
		target := both
		if st.Emergency {
			target = newOnly
		}
		if err := r.waitIssuer(ctx, st, newOnly, target.SHA256()); err != nil {
			return err
		}
	case Reissue:
		target := both
		if st.Emergency {
			target = newOnly
		}
		r.say("stage Reissue: proxies renew from the new issuer within %s", st.ReissueWindow)
		if err := r.setBundle(ctx, target.PEM(), st.ReissueWindow); err != nil {
			return err
		}
		if err := r.waitLeaves(ctx, st, newOnly, target.SHA256()); err != nil {
			return err
		}
		if err := r.setBundle(ctx, target.PEM(), 0); err != nil {
			return err
		}
		if st.Emergency {
			if err := r.check(ctx); err != nil {
				return err
			}
			st.advance(r.cfg.Now(), Done)
			return nil
		}
	case Remove:
		r.say("stage Remove: publishing the new anchor alone (%.12s)", newOnly.SHA256())
		if err := r.setBundle(ctx, newOnly.PEM(), 0); err != nil {
			return err
		}
		if err := r.waitBundle(ctx, st, newOnly.SHA256()); err != nil {
			return err
		}
		if err := r.check(ctx); err != nil {
			return err
		}
	}
	st.advance(r.cfg.Now(), st.Stage.next())
	return nil
}

// abort undoes what the rotation did, newest first, then stops at Aborted:
// the issuer chains to the old anchor again (restored if it was switched,
// or cert-manager was asked to), every CA replica signs with it, every
// leaf chains to the old anchor, and only then is the old bundle alone
// published.
func (r *Rotator) abort(ctx context.Context, st *State, keys map[string][]byte) error {
	old, err := bundle.Parse([]byte(st.OldBundle))
	if err != nil {
		return fmt.Errorf("anchor: the old bundle: %w", err)
	}
	both, err := bundle.Parse([]byte(st.OldBundle + st.NewAnchor))
	if err != nil {
		return err
	}
	switched, err := r.switched(ctx, st, old)
	if err != nil {
		return err
	}
	if switched {
		r.say("abort: restoring the issuer from the old anchor")
		if st.CertManager {
			if keys[keyOldAnchorCrt] == nil {
				return errors.New("anchor: cert-manager's old anchor was not saved; cannot go back")
			}
			_, err = r.useAnchor(ctx, st, old, keys[keyOldAnchorCrt], keys[keyOldAnchorKey], keys, false)
		} else {
			_, err = r.restoreIssuer(ctx, keys, old)
		}
		if err != nil {
			return err
		}
	}
	if err := r.waitIssuer(ctx, st, old, both.SHA256()); err != nil {
		return err
	}
	if err := r.setBundle(ctx, both.PEM(), st.ReissueWindow); err != nil {
		return err
	}
	if err := r.waitLeaves(ctx, st, old, both.SHA256()); err != nil {
		return err
	}
	r.say("abort: publishing the old bundle (%.12s)", old.SHA256())
	if err := r.setBundle(ctx, old.PEM(), 0); err != nil {
		return err
	}
	if err := r.waitBundle(ctx, st, old.SHA256()); err != nil {
		return err
	}
	st.advance(r.cfg.Now(), Aborted)
	return nil
}

// switched reports whether the issuer no longer comes from the old anchor:
// the issuer Secret does not chain to it (or is missing), or, with
// cert-manager, its anchor Secret no longer holds an old anchor.
func (r *Rotator) switched(ctx context.Context, st *State, old *bundle.Bundle) (bool, error) {
	if st.CertManager {
		s, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, manifest.AnchorSecret, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("anchor: cert-manager's anchor Secret: %w", err)
		}
		if a, err := bundle.Parse(s.Data[corev1.TLSCertKey]); err != nil || !old.Contains(a.Anchors()[0]) {
			return true, nil
		}
	}
	cur, err := r.issuer(ctx)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("anchor: read the issuer: %w", err)
	}
	return cur.Verify(old, r.cfg.Now()) != nil, nil
}

// check runs meshid check's trust checks; any failure stops the rotation.
func (r *Rotator) check(ctx context.Context) error {
	in := health.Input{Now: r.cfg.Now(), BundleName: manifest.BundleConfigMap, IssuerName: manifest.IssuerSecret, WarnWithin: 0}
	in.BundlePEM, in.BundleErr = r.bundlePEM(ctx)
	if s, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{}); err != nil {
		in.IssuerErr = err
	} else {
		in.IssuerCert, in.IssuerKey = s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		in.IssuerWarnWithin = time.Nanosecond // only an expired issuer fails here
	}
	rep := health.Run(in)
	for _, row := range rep.Rows {
		if row.Status == health.Fail {
			return fmt.Errorf("anchor: meshid check fails: %s: %s (%s)", row.Check, row.Detail, row.Hint)
		}
	}
	return nil
}

// Status is what `meshid rotate-anchor status` shows.
type Status struct {
	State   *State     `json:"state"`
	Fleet   fleet.View `json:"fleet"`
	Waiting string     `json:"waiting_for,omitempty"`
	Ready   int        `json:"converged"`
	Total   int        `json:"total"`
	Lagging []string   `json:"lagging,omitempty"`
}

// Status reads the rotation and the fleet.
func (r *Rotator) Status(ctx context.Context) (*Status, error) {
	st, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	view, err := r.fleet(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{State: st, Fleet: view}
	if st == nil || st.Stage.Finished() {
		return out, nil
	}
	what, done := r.goal(st)
	if done != nil {
		out.Waiting = what
		out.Lagging = view.Lagging(done)
		out.Total = len(view.Proxies)
		out.Ready = out.Total - len(out.Lagging)
	}
	return out, nil
}

// goal says what the current stage waits for.
func (r *Rotator) goal(st *State) (string, func(fleet.Proxy) bool) {
	if st.Aborting {
		old, err := bundle.Parse([]byte(st.OldBundle))
		if err != nil {
			return "", nil
		}
		return "proxies back on the old anchor alone", func(p fleet.Proxy) bool { return p.BundleSHA256 == old.SHA256() }
	}
	switch st.Stage {
	case Add:
		both, err := bundle.Parse([]byte(st.OldBundle + st.NewAnchor))
		if err != nil {
			return "", nil
		}
		return "proxies holding the bundle with both anchors", func(p fleet.Proxy) bool { return p.BundleSHA256 == both.SHA256() }
	case SwitchIssuer, Reissue:
		n, err := bundle.Parse([]byte(st.NewAnchor))
		if err != nil {
			return "", nil
		}
		return "proxies with a leaf from the new anchor", func(p fleet.Proxy) bool { return p.LeafAnchorSHA256 == bundle.Fingerprint(n.Anchors()[0]) }
	case Remove:
		n, err := bundle.Parse([]byte(st.NewAnchor))
		if err != nil {
			return "", nil
		}
		return "proxies holding the new anchor alone", func(p fleet.Proxy) bool { return p.BundleSHA256 == n.SHA256() }
	}
	return "", nil
}

func (r *Rotator) waitBundle(ctx context.Context, st *State, sha string) error {
	return r.wait(ctx, st, "bundle "+sha[:12],
		func(p fleet.Proxy) bool { return p.BundleSHA256 == sha },
		func(rep fleet.Report) bool { return rep.BundleSHA256 == sha })
}

// waitIssuer waits until every CA replica signs with the issuer in the
// Secret (read again each round: cert-manager may renew it meanwhile),
// which must chain to anchors, while every proxy still holds bundle sha.
func (r *Rotator) waitIssuer(ctx context.Context, st *State, anchors *bundle.Bundle, sha string) error {
	return r.wait(ctx, st, "the issuer from anchor "+bundle.Fingerprint(anchors.Anchors()[0])[:12]+" (CA replicas)",
		func(p fleet.Proxy) bool { return p.BundleSHA256 == sha },
		func(rep fleet.Report) bool {
			cur, err := r.issuer(ctx)
			return err == nil && cur.Verify(anchors, r.cfg.Now()) == nil && rep.IssuerSHA256 == cur.Fingerprint()
		})
}

// waitLeaves waits until every proxy's leaf chains to the (first) anchor of
// anchors, and it still holds bundle sha.
func (r *Rotator) waitLeaves(ctx context.Context, st *State, anchors *bundle.Bundle, sha string) error {
	want := bundle.Fingerprint(anchors.Anchors()[0])
	if len(anchors.Anchors()) > 1 {
		// The old bundle may hold several anchors: any of them will do.
		return r.wait(ctx, st, "leaves from the old anchors",
			func(p fleet.Proxy) bool {
				return p.BundleSHA256 == sha && containsFingerprint(anchors, p.LeafAnchorSHA256)
			}, nil)
	}
	return r.wait(ctx, st, "leaves from anchor "+want[:12],
		func(p fleet.Proxy) bool { return p.BundleSHA256 == sha && p.LeafAnchorSHA256 == want }, nil)
}

func containsFingerprint(b *bundle.Bundle, fp string) bool {
	for _, a := range b.Anchors() {
		if bundle.Fingerprint(a) == fp {
			return true
		}
	}
	return false
}

// wait polls the fleet until every proxy (including ones this run saw that
// dropped out of the view, for up to fleet.Forget) satisfies proxyDone and
// every CA replica satisfies replicaDone (nil: no condition), with at
// least one replica reporting, or the stage times out and names who holds
// it back.
func (r *Rotator) wait(ctx context.Context, st *State, what string, proxyDone func(fleet.Proxy) bool, replicaDone func(fleet.Report) bool) error {
	deadline := r.cfg.Now().Add(r.cfg.StageTimeout)
	lastMsg := ""
	for {
		view, err := r.fleet(ctx)
		if err != nil {
			return err
		}
		now := r.cfg.Now()
		for _, p := range view.Proxies {
			r.seen[p.Key()] = p
		}
		var lag []string
		total := 0
		for k, p := range r.seen {
			if now.Sub(p.LastSeen) > fleet.Forget {
				delete(r.seen, k)
				continue
			}
			total++
			if !proxyDone(p) {
				lag = append(lag, p.Describe(now))
			}
		}
		slices.Sort(lag)
		for _, rep := range view.Replicas {
			if replicaDone != nil {
				total++
				if !replicaDone(rep) {
					lag = append(lag, "CA replica "+rep.Replica)
				}
			}
		}
		msg := ""
		switch {
		case len(view.Replicas) == 0:
			msg = "no CA replica has published a fleet report (is meshid-ca running, and allowed to write ConfigMaps meshid-fleet-*?)"
		case len(lag) > 0:
			msg = fmt.Sprintf("%d/%d converged on %s; waiting for %s", total-len(lag), total, what, strings.Join(first(lag, 5), ", "))
		default:
			r.say("stage %s: converged on %s (%d proxies, %d CA replicas)", st.Stage, what, len(r.seen), len(view.Replicas))
			return nil
		}
		if msg != lastMsg {
			r.say("stage %s: %s", st.Stage, msg)
			st.Message = msg
			if err := r.save(ctx, st); err != nil {
				return err
			}
			lastMsg = msg
		}
		if now.After(deadline) {
			return fmt.Errorf("anchor: stage %s did not converge within %s: %s; fix them and run resume (or abort)", st.Stage, r.cfg.StageTimeout, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("anchor: interrupted at stage %s: %w (run resume to continue)", st.Stage, ctx.Err())
		case <-time.After(r.cfg.Poll):
		}
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// fleet reads every replica's report.
func (r *Rotator) fleet(ctx context.Context) (fleet.View, error) {
	cms, err := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		return fleet.View{}, fmt.Errorf("anchor: read the fleet reports: %w", err)
	}
	var reports []fleet.Report
	for _, cm := range cms.Items {
		var rep fleet.Report
		if json.Unmarshal([]byte(cm.Data[fleet.ConfigMapKey]), &rep) == nil {
			reports = append(reports, rep)
		}
	}
	return fleet.Merge(reports, r.cfg.Now(), 30*time.Second), nil
}

// useAnchor makes the issuer Secret hold an issuer from anchorPEM (from
// its key; or, with cert-manager, by giving cert-manager the anchor and
// having it re-issue) and returns its fingerprint. backup saves the
// current material first so abort can restore it.
func (r *Rotator) useAnchor(ctx context.Context, st *State, anchors *bundle.Bundle, anchorPEM, anchorKey []byte, keys map[string][]byte, backup bool) (string, error) {
	now := r.cfg.Now()
	if cur, err := r.issuer(ctx); err == nil && cur.Verify(anchors, now) == nil {
		return cur.Fingerprint(), nil // done already (a rerun)
	}
	secrets := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace)
	if !st.CertManager {
		anchor, err := issuer.Parse(anchorPEM, anchorKey)
		if err != nil {
			return "", fmt.Errorf("anchor: %w", err)
		}
		cur, err := secrets.Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", err
		}
		ttl := r.cfg.IssuerTTL
		if cur != nil && len(cur.Data[corev1.TLSCertKey]) > 0 {
			if backup && keys[keyOldIssuerCrt] == nil {
				keys[keyOldIssuerCrt], keys[keyOldIssuerKey] = cur.Data[corev1.TLSCertKey], cur.Data[corev1.TLSPrivateKeyKey]
				if err := r.saveKeys(ctx, keys); err != nil {
					return "", err
				}
			}
			if old, err := issuer.Parse(cur.Data[corev1.TLSCertKey], cur.Data[corev1.TLSPrivateKeyKey]); err == nil && ttl == 0 {
				ttl = old.Cert.NotAfter.Sub(old.Cert.NotBefore)
			}
		}
		if ttl < 24*time.Hour {
			ttl = max(ttl, 48*time.Hour)
		}
		next, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "meshid issuer", NotBefore: now.Add(-5 * time.Minute), TTL: ttl, MaxPathLenZero: true})
		if err != nil {
			return "", err
		}
		key, err := next.KeyPEM()
		if err != nil {
			return "", err
		}
		r.say("stage %s: writing an issuer from the new anchor (%s) to Secret %s", st.Stage, next.Fingerprint()[:12], manifest.IssuerSecret)
		if err := r.putSecret(ctx, manifest.IssuerSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: next.CertPEM(), corev1.TLSPrivateKeyKey: key}); err != nil {
			return "", err
		}
		return next.Fingerprint(), nil
	}
	// cert-manager: its CA Issuer signs with the anchor Secret; swap it, and
	// have cert-manager re-issue by removing the issuer Secret.
	cur, err := secrets.Get(ctx, manifest.AnchorSecret, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("anchor: cert-manager's anchor Secret %s: %w", manifest.AnchorSecret, err)
	}
	if !bytes.Equal(cur.Data[corev1.TLSCertKey], anchorPEM) {
		if backup && keys[keyOldAnchorCrt] == nil {
			keys[keyOldAnchorCrt], keys[keyOldAnchorKey] = cur.Data[corev1.TLSCertKey], cur.Data[corev1.TLSPrivateKeyKey]
			if err := r.saveKeys(ctx, keys); err != nil {
				return "", err
			}
		}
		r.say("stage %s: giving cert-manager the anchor (Secret %s)", st.Stage, manifest.AnchorSecret)
		if err := r.putSecret(ctx, manifest.AnchorSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: anchorPEM, corev1.TLSPrivateKeyKey: anchorKey}); err != nil {
			return "", err
		}
	}
	r.say("stage %s: asking cert-manager to re-issue %s", st.Stage, manifest.IssuerSecret)
	if err := secrets.Delete(ctx, manifest.IssuerSecret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	deadline := now.Add(r.cfg.StageTimeout)
	for {
		if cur, err := r.issuer(ctx); err == nil && cur.Verify(anchors, r.cfg.Now()) == nil {
			return cur.Fingerprint(), nil
		}
		if r.cfg.Now().After(deadline) {
			return "", fmt.Errorf("anchor: cert-manager did not re-issue %s from the anchor within %s: check the Certificate's status", manifest.IssuerSecret, r.cfg.StageTimeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(r.cfg.Poll / 2):
		}
	}
}

// restoreIssuer puts the issuer saved before the switch back.
func (r *Rotator) restoreIssuer(ctx context.Context, keys map[string][]byte, old *bundle.Bundle) (string, error) {
	crt, key := keys[keyOldIssuerCrt], keys[keyOldIssuerKey]
	if crt == nil {
		return "", errors.New("anchor: the issuer from before the rotation was not saved; cannot go back")
	}
	kp, err := issuer.Parse(crt, key)
	if err != nil {
		return "", err
	}
	if err := kp.Verify(old, r.cfg.Now()); err != nil {
		return "", fmt.Errorf("anchor: cannot go back: the old issuer is no longer usable (%w); finish the rotation with resume instead", err)
	}
	return kp.Fingerprint(), r.putSecret(ctx, manifest.IssuerSecret, corev1.SecretTypeTLS, map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key})
}
