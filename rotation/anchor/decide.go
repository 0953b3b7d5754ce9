package anchor

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

// DefaultStageTimeout bounds one wait when Config.StageTimeout (and
// Observed.Timeout) is 0.
const DefaultStageTimeout = 10 * time.Minute

// Observed is everything a stage decision looks at: the stored rotation,
// what the cluster holds, what the fleet reports, what this run has already
// waited for and done, and the time. Next is a function of it alone.
type Observed struct {
	// Now is when it was observed.
	Now time.Time
	// State is the stored rotation. Required.
	State *State
	// Saved is the material the rotation keeps in Secret meshid-rotation.
	Saved Saved

	// Bundle is the trust bundle ConfigMap's bundle, as written, and Window
	// its re-issue window as written ("" when there is none). BundleErr
	// says why the bundle could not be read (nil when it was).
	Bundle    []byte
	Window    string
	BundleErr error
	// IssuerCert and IssuerKey are the issuer Secret's tls.crt and tls.key;
	// IssuerErr is a not-found error when the Secret is missing (cert-manager
	// re-issuing it), nil otherwise.
	IssuerCert, IssuerKey []byte
	IssuerErr             error
	// CertManagerAnchor and CertManagerAnchorKey are cert-manager's anchor
	// Secret (cert-manager mode only); CertManagerAnchorErr says why it could
	// not be read.
	CertManagerAnchor, CertManagerAnchorKey []byte
	CertManagerAnchorErr                    error

	// Fleet is the merged fleet view (fleet.Merge). Its Proxies are the
	// ones that count: the run adds those it saw that dropped out of the
	// view, until they have been gone for fleet.Forget.
	Fleet fleet.View

	// Waiting is what this run has been waiting for in this stage, and
	// since when; zero when it has waited for nothing yet.
	Waiting Waiting
	// AskedCertManager is set once this run, in this stage, has deleted
	// the issuer Secret for cert-manager to re-issue it.
	AskedCertManager bool

	// Timeout bounds one wait; 0 means DefaultStageTimeout.
	Timeout time.Duration
	// IssuerTTL is the lifetime of an issuer made from the new anchor; 0
	// means the lifetime of the issuer in place. Either way an issuer
	// shorter than 24 h gets 48 h.
	IssuerTTL time.Duration
}

// Saved is what a rotation keeps in Secret meshid-rotation: the new
// anchor's key, and the material from before the switch, for abort. A nil
// field has not been saved.
type Saved struct {
	NewAnchorKey                []byte
	OldIssuerCert, OldIssuerKey []byte // Secret mode
	OldAnchorCert, OldAnchorKey []byte // cert-manager mode
}

// Waiting is a goal a run waits for and when it started waiting.
type Waiting struct {
	Goal  string
	Since time.Time
}

// Kind is what a Decision says to do.
type Kind int

const (
	// Wait until the cluster changes or Deadline passes, then look again.
	Wait Kind = iota + 1
	// Act: do Action, then look again.
	Act
	// Advance: the stage is done; move to Stage.
	Advance
	// Fail: stop; Failure says why and what to do.
	Fail
)

func (k Kind) String() string {
	switch k {
	case Wait:
		return "wait"
	case Act:
		return "act"
	case Advance:
		return "advance"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Decision is what to do next in a rotation.
type Decision struct {
	Kind Kind
	// Intro is the line a run prints once when it reaches this part of a
	// stage ("stage Add: publishing ..."); "" for none.
	Intro string
	// Met are the goals met on the way to this decision, each with the
	// line a run prints once ("stage Add: converged on ...").
	Met []Met

	// Goal names what a Wait waits for. Message says how far it got: the
	// line a run prints when it changes, and status shows ("" for a wait
	// that says nothing). A Fail from a timed-out wait carries its last
	// Message too.
	Goal     string
	Message  string
	Deadline time.Time // when the Wait fails

	// Action is what to do (Act).
	Action Action
	// Stage is the stage to move to (Advance).
	Stage Stage
	// Failure says why to stop (Fail).
	Failure *Failure
}

// Met is a goal that converged, and the line that says so.
type Met struct {
	Goal, Line string
}

// Action is one write a rotation makes; each is one of the types below.
type Action interface{ isAction() }

// PublishBundle writes PEM to the trust bundle ConfigMap, with the re-issue
// window Window (0 removes it).
type PublishBundle struct {
	PEM    []byte
	Window time.Duration
}

// BackupIssuer saves the issuer in place (Secret mode) before it is
// replaced, so abort can restore it.
type BackupIssuer struct{ Cert, Key []byte }

// WriteIssuer makes an issuer from the anchor AnchorCert/AnchorKey, valid
// from NotBefore for TTL, and writes it to the issuer Secret.
type WriteIssuer struct {
	AnchorCert, AnchorKey []byte
	NotBefore             time.Time
	TTL                   time.Duration
}

// RestoreIssuer writes the issuer saved before the switch back.
type RestoreIssuer struct{ Cert, Key []byte }

// BackupCertManagerAnchor saves cert-manager's anchor Secret before it is
// replaced.
type BackupCertManagerAnchor struct{ Cert, Key []byte }

// GiveCertManagerAnchor writes Cert/Key to cert-manager's anchor Secret.
type GiveCertManagerAnchor struct{ Cert, Key []byte }

// AskCertManager deletes the issuer Secret, for cert-manager to re-issue
// it from its anchor Secret.
type AskCertManager struct{}

// RecordIssuer stores the fingerprint of the issuer from the new anchor.
type RecordIssuer struct{ SHA256 string }

func (PublishBundle) isAction()           {}
func (BackupIssuer) isAction()            {}
func (WriteIssuer) isAction()             {}
func (RestoreIssuer) isAction()           {}
func (BackupCertManagerAnchor) isAction() {}
func (GiveCertManagerAnchor) isAction()   {}
func (AskCertManager) isAction()          {}
func (RecordIssuer) isAction()            {}

// The String methods name the action without its keys.
func (a PublishBundle) String() string {
	return fmt.Sprintf("publish bundle %.12s (window %q)", bundleSHA(a.PEM), windowValue(a.Window))
}
func (BackupIssuer) String() string { return "back up the issuer" }
func (a WriteIssuer) String() string {
	return fmt.Sprintf("write an issuer from anchor %.12s for %s", bundleSHA(a.AnchorCert), a.TTL)
}
func (RestoreIssuer) String() string           { return "restore the issuer" }
func (BackupCertManagerAnchor) String() string { return "back up cert-manager's anchor" }
func (a GiveCertManagerAnchor) String() string {
	return fmt.Sprintf("give cert-manager anchor %.12s", bundleSHA(a.Cert))
}
func (AskCertManager) String() string { return "ask cert-manager to re-issue" }
func (a RecordIssuer) String() string { return fmt.Sprintf("record issuer %.12s", a.SHA256) }

func bundleSHA(pem []byte) string {
	if b, err := bundle.Parse(pem); err == nil {
		return b.SHA256()
	}
	return "(no bundle)"
}

// Reason says why a rotation stopped; it doubles as a metric label.
type Reason string

const (
	// ReasonTimeout: a stage did not converge within the stage timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonCheck: meshid check fails on the bundle or the issuer.
	ReasonCheck Reason = "check_failed"
	// ReasonCertManager: cert-manager's anchor Secret cannot be read, or
	// cert-manager did not re-issue the issuer in time.
	ReasonCertManager Reason = "cert_manager"
	// ReasonNoWayBack: abort cannot restore the material from before the
	// switch.
	ReasonNoWayBack Reason = "no_way_back"
	// ReasonState: the stored rotation or its keys cannot be used.
	ReasonState Reason = "bad_state"
	// ReasonError: the run stopped on an error talking to the cluster.
	ReasonError Reason = "error"
)

// Failure is why a rotation stopped (Detail) and what to do (Hint, "" when
// Detail says it).
type Failure struct {
	Reason Reason
	Detail string
	Hint   string
	// Err is the error behind it, if any.
	Err error
}

func (f *Failure) Error() string {
	if f.Hint == "" {
		return "anchor: " + f.Detail
	}
	return "anchor: " + f.Detail + "; " + f.Hint
}

func (f *Failure) Unwrap() error { return f.Err }

// Next decides what a rotation does next, from what it observes. It is a
// pure function: the loop in Rotator does what it says and looks again.
//
// A stage is a chain of goals, each met or not by what is observed: the
// first unmet one says what to do (write something, or wait for the fleet),
// and when every goal is met the stage advances. Nothing is remembered
// between calls but what Observed says, so a rerun resumes anywhere.
func Next(o Observed) Decision {
	d := &decider{o: &o}
	if o.Timeout <= 0 {
		o.Timeout = DefaultStageTimeout
	}
	switch st := o.State; {
	case st == nil:
		return d.fail(&Failure{Reason: ReasonState, Detail: "no rotation is stored", Hint: "start one"})
	case st.Stage.Finished():
		return d.fail(&Failure{Reason: ReasonState, Detail: "the rotation is already " + string(st.Stage)})
	}
	if len(o.IssuerCert) > 0 {
		d.iss, d.issErr = issuer.Parse(o.IssuerCert, o.IssuerKey)
	} else if o.IssuerErr == nil {
		d.issErr = fmt.Errorf("%w: the issuer Secret %s holds no certificate", issuer.ErrInvalid, manifest.IssuerSecret)
	}
	if o.State.Aborting {
		return d.abort()
	}
	return d.forward()
}

// decider builds one Decision: the intro and the goals met so far.
type decider struct {
	o      *Observed
	iss    *issuer.KeyPair // the issuer Secret, parsed; nil when missing or bad
	issErr error           // why it does not parse
	intro  string
	met    []Met
}

func (d *decider) decide(x Decision) Decision {
	x.Intro, x.Met = d.intro, d.met
	return x
}

func (d *decider) act(a Action) Decision { return d.decide(Decision{Kind: Act, Action: a}) }
func (d *decider) advance(s Stage) Decision {
	return d.decide(Decision{Kind: Advance, Stage: s})
}
func (d *decider) fail(f *Failure) Decision { return d.decide(Decision{Kind: Fail, Failure: f}) }

func (d *decider) actp(a Action) *Decision {
	x := d.act(a)
	return &x
}

func (d *decider) failp(f *Failure) *Decision {
	x := d.fail(f)
	return &x
}

func (d *decider) forward() Decision {
	o, st := d.o, d.o.State
	newOnly, err := bundle.Parse([]byte(st.NewAnchor))
	if err != nil {
		return d.fail(&Failure{Reason: ReasonState, Detail: "the new anchor: " + err.Error(), Err: err})
	}
	both, err := bundle.Parse([]byte(st.OldBundle + st.NewAnchor))
	if err != nil && !st.Emergency {
		return d.fail(&Failure{Reason: ReasonState, Detail: "old + new bundle: " + err.Error(), Err: err})
	}
	// target is the bundle proxies hold while the issuer changes.
	target := both
	if st.Emergency {
		target = newOnly
	}
	switch st.Stage {
	case Add:
		d.intro = fmt.Sprintf("stage Add: publishing the bundle with both anchors (%.12s)", both.SHA256())
		if x := d.publish(both, 0); x != nil {
			return *x
		}
		if x := d.await(bundleGoal(both)); x != nil {
			return *x
		}
		if x := d.check(); x != nil {
			return *x
		}
		return d.advance(SwitchIssuer)
	case SwitchIssuer:
		if st.Emergency {
			d.intro = "stage SwitchIssuer (emergency): publishing the new anchor alone, at once"
			if x := d.publish(newOnly, st.ReissueWindow); x != nil {
				return *x
			}
		}
		fp, x := d.issuerFrom(newOnly, []byte(st.NewAnchor), o.Saved.NewAnchorKey, true)
		if x != nil {
			return *x
		}
		if fp != st.NewIssuerSHA256 {
			return d.act(RecordIssuer{SHA256: fp})
		}
		if x := d.await(d.issuerGoal(newOnly, target)); x != nil {
			return *x
		}
		return d.advance(Reissue)
	case Reissue:
		d.intro = fmt.Sprintf("stage Reissue: proxies renew from the new issuer within %s", st.ReissueWindow)
		if x := d.await(leavesGoal(newOnly, target)); x != nil {
			if p := d.publish(target, st.ReissueWindow); p != nil {
				return *p
			}
			return *x
		}
		if x := d.publish(target, 0); x != nil {
			return *x
		}
		if !st.Emergency {
			return d.advance(Remove)
		}
		if x := d.check(); x != nil {
			return *x
		}
		return d.advance(Done)
	case Remove:
		d.intro = fmt.Sprintf("stage Remove: publishing the new anchor alone (%.12s)", newOnly.SHA256())
		if x := d.publish(newOnly, 0); x != nil {
			return *x
		}
		if x := d.await(bundleGoal(newOnly)); x != nil {
			return *x
		}
		if x := d.check(); x != nil {
			return *x
		}
		return d.advance(Done)
	}
	return d.fail(&Failure{Reason: ReasonState, Detail: fmt.Sprintf("the stored rotation is at an unknown stage %q", st.Stage)})
}

// abort undoes what the rotation did, newest first, and stops at Aborted:
// the issuer chains to the old anchor again (restored if it was switched,
// or cert-manager was asked to), every CA replica signs with it, every leaf
// chains to the old anchor, and only then is the old bundle alone published
// and awaited.
func (d *decider) abort() Decision {
	o, st := d.o, d.o.State
	old, err := bundle.Parse([]byte(st.OldBundle))
	if err != nil {
		return d.fail(&Failure{Reason: ReasonState, Detail: "the old bundle: " + err.Error(), Err: err})
	}
	both, err := bundle.Parse([]byte(st.OldBundle + st.NewAnchor))
	if err != nil {
		return d.fail(&Failure{Reason: ReasonState, Detail: "old + new bundle: " + err.Error(), Err: err})
	}
	publishOld := fmt.Sprintf("abort: publishing the old bundle (%.12s)", old.SHA256())
	if b, err := bundle.Parse(o.Bundle); err == nil && b.SHA256() == old.SHA256() && o.Window == "" {
		// The old bundle is back (or was never replaced): wait for it.
		d.intro = publishOld
		if x := d.await(bundleGoal(old)); x != nil {
			return *x
		}
		return d.advance(Aborted)
	}
	if x := d.restore(old); x != nil {
		return *x
	}
	d.intro = ""
	if x := d.await(d.issuerGoal(old, both)); x != nil {
		return *x
	}
	if x := d.publish(both, st.ReissueWindow); x != nil {
		return *x
	}
	if x := d.await(leavesGoal(old, both)); x != nil {
		return *x
	}
	d.intro = publishOld
	return d.act(PublishBundle{PEM: old.PEM()})
}

// restore is met when the issuer comes from the old anchor: the issuer
// Secret chains to it and, with cert-manager, its anchor Secret holds an old
// anchor. Until then it puts the saved issuer back, or gives cert-manager
// its old anchor and has it re-issue.
func (d *decider) restore(old *bundle.Bundle) *Decision {
	o, st := d.o, d.o.State
	switched := false
	if st.CertManager {
		if o.CertManagerAnchorErr != nil {
			return d.failp(d.certManagerAnchorFailure())
		}
		if a, err := bundle.Parse(o.CertManagerAnchor); err != nil || !old.Contains(a.Anchors()[0]) {
			switched = true
		}
	}
	switch {
	case o.IssuerErr != nil:
		switched = true
	case d.issErr != nil:
		return d.failp(&Failure{Reason: ReasonState, Detail: "read the issuer: " + d.issErr.Error(), Err: d.issErr})
	case d.iss.Verify(old, o.Now) != nil:
		switched = true
	}
	if !switched {
		return nil
	}
	d.intro = "abort: restoring the issuer from the old anchor"
	if st.CertManager {
		if o.Saved.OldAnchorCert == nil {
			return d.failp(&Failure{Reason: ReasonNoWayBack, Detail: "cert-manager's old anchor was not saved", Hint: "cannot go back"})
		}
		_, x := d.issuerFrom(old, o.Saved.OldAnchorCert, o.Saved.OldAnchorKey, false)
		return x
	}
	crt, key := o.Saved.OldIssuerCert, o.Saved.OldIssuerKey
	if crt == nil {
		return d.failp(&Failure{Reason: ReasonNoWayBack, Detail: "the issuer from before the rotation was not saved", Hint: "cannot go back"})
	}
	kp, err := issuer.Parse(crt, key)
	if err != nil {
		return d.failp(&Failure{Reason: ReasonNoWayBack, Detail: err.Error(), Err: err})
	}
	if err := kp.Verify(old, o.Now); err != nil {
		return d.failp(&Failure{Reason: ReasonNoWayBack, Detail: fmt.Sprintf("cannot go back: the old issuer is no longer usable (%v)", err), Hint: "finish the rotation with resume instead", Err: err})
	}
	return d.actp(RestoreIssuer{Cert: crt, Key: key})
}

// issuerFrom is met when the issuer Secret holds an issuer that chains to
// anchors, and returns its fingerprint. Until then it says how to get
// there: write one from anchorCert/anchorKey (saving the one in place first
// when backup), or, with cert-manager, give cert-manager that anchor (saving
// its current one first when backup), have it re-issue, and wait.
func (d *decider) issuerFrom(anchors *bundle.Bundle, anchorCert, anchorKey []byte, backup bool) (string, *Decision) {
	o, st := d.o, d.o.State
	if d.iss != nil && d.iss.Verify(anchors, o.Now) == nil {
		return d.iss.Fingerprint(), nil // done already (a rerun)
	}
	if !st.CertManager {
		if _, err := issuer.Parse(anchorCert, anchorKey); err != nil {
			return "", d.failp(&Failure{Reason: ReasonState, Detail: err.Error(), Err: err})
		}
		if backup && len(o.IssuerCert) > 0 && o.Saved.OldIssuerCert == nil {
			return "", d.actp(BackupIssuer{Cert: o.IssuerCert, Key: o.IssuerKey})
		}
		ttl := o.IssuerTTL
		if d.iss != nil && ttl == 0 {
			ttl = d.iss.Cert.NotAfter.Sub(d.iss.Cert.NotBefore)
		}
		if ttl < 24*time.Hour {
			ttl = 48 * time.Hour
		}
		return "", d.actp(WriteIssuer{AnchorCert: anchorCert, AnchorKey: anchorKey, NotBefore: o.Now.Add(-5 * time.Minute), TTL: ttl})
	}
	if o.CertManagerAnchorErr != nil {
		return "", d.failp(d.certManagerAnchorFailure())
	}
	if !bytes.Equal(o.CertManagerAnchor, anchorCert) {
		if backup && o.Saved.OldAnchorCert == nil {
			return "", d.actp(BackupCertManagerAnchor{Cert: o.CertManagerAnchor, Key: o.CertManagerAnchorKey})
		}
		return "", d.actp(GiveCertManagerAnchor{Cert: anchorCert, Key: anchorKey})
	}
	if !o.AskedCertManager {
		return "", d.actp(AskCertManager{})
	}
	return "", d.wait(goalCertManager, "", &Failure{
		Reason: ReasonCertManager,
		Detail: fmt.Sprintf("cert-manager did not re-issue %s from the anchor within %s: check the Certificate's status", manifest.IssuerSecret, o.Timeout),
	})
}

// goalCertManager is the wait for cert-manager to re-issue the issuer.
const goalCertManager = "cert-manager re-issuing " + manifest.IssuerSecret

func (d *decider) certManagerAnchorFailure() *Failure {
	err := d.o.CertManagerAnchorErr
	return &Failure{Reason: ReasonCertManager, Detail: fmt.Sprintf("cert-manager's anchor Secret %s: %v", manifest.AnchorSecret, err), Err: err}
}

// publish is met when the bundle ConfigMap holds b with re-issue window w;
// until then it says to write them.
func (d *decider) publish(b *bundle.Bundle, w time.Duration) *Decision {
	if d.o.BundleErr == nil && bytes.Equal(d.o.Bundle, b.PEM()) && d.o.Window == windowValue(w) {
		return nil
	}
	return d.actp(PublishBundle{PEM: b.PEM(), Window: w})
}

// windowValue is how the bundle ConfigMap writes a re-issue window: "" for
// none.
func windowValue(w time.Duration) string {
	if w == 0 {
		return ""
	}
	return w.String()
}

// check is met when meshid check's trust checks pass.
func (d *decider) check() *Decision {
	o := d.o
	if f := checkTrust(healthInput(o.Now, o.Bundle, o.BundleErr, o.IssuerCert, o.IssuerKey, o.IssuerErr)); f != nil {
		return d.failp(f)
	}
	return nil
}

// healthInput is what meshid check's trust checks look at during a
// rotation: the bundle and the issuer, where only an expired issuer fails.
func healthInput(now time.Time, bundlePEM []byte, bundleErr error, cert, key []byte, issuerErr error) health.Input {
	in := health.Input{Now: now, BundleName: manifest.BundleConfigMap, IssuerName: manifest.IssuerSecret,
		BundlePEM: bundlePEM, BundleErr: bundleErr, IssuerCert: cert, IssuerKey: key, IssuerErr: issuerErr}
	if issuerErr == nil {
		in.IssuerWarnWithin = time.Nanosecond // only an expired issuer fails here
	}
	return in
}

// checkTrust runs meshid check's trust checks; the first failure is the
// rotation's.
func checkTrust(in health.Input) *Failure {
	for _, row := range health.Run(in).Rows {
		if row.Status == health.Fail {
			return &Failure{Reason: ReasonCheck, Detail: fmt.Sprintf("meshid check fails: %s: %s (%s)", row.Check, row.Detail, row.Hint)}
		}
	}
	return nil
}

// goal is what a wait waits for: every proxy, and (when replica is set)
// every CA replica, done.
type goal struct {
	what    string
	proxy   func(fleet.Proxy) bool
	replica func(fleet.Report) bool
}

// bundleGoal: every proxy and every CA replica holds b.
func bundleGoal(b *bundle.Bundle) goal {
	sha := b.SHA256()
	return goal{
		what:    "bundle " + sha[:12],
		proxy:   func(p fleet.Proxy) bool { return p.BundleSHA256 == sha },
		replica: func(r fleet.Report) bool { return r.BundleSHA256 == sha },
	}
}

// issuerGoal: every CA replica signs with the issuer in the Secret, which
// chains to anchors (cert-manager may renew it meanwhile: each observation
// reads it again), while every proxy still holds held.
func (d *decider) issuerGoal(anchors, held *bundle.Bundle) goal {
	iss := d.iss
	if iss != nil && iss.Verify(anchors, d.o.Now) != nil {
		iss = nil
	}
	sha := held.SHA256()
	return goal{
		what:    "the issuer from anchor " + bundle.Fingerprint(anchors.Anchors()[0])[:12] + " (CA replicas)",
		proxy:   func(p fleet.Proxy) bool { return p.BundleSHA256 == sha },
		replica: func(r fleet.Report) bool { return iss != nil && r.IssuerSHA256 == iss.Fingerprint() },
	}
}

// leavesGoal: every proxy's leaf chains to an anchor of anchors, and it
// still holds held.
func leavesGoal(anchors, held *bundle.Bundle) goal {
	sha := held.SHA256()
	if len(anchors.Anchors()) > 1 {
		// The old bundle may hold several anchors: any of them will do.
		return goal{
			what: "leaves from the old anchors",
			proxy: func(p fleet.Proxy) bool {
				return p.BundleSHA256 == sha && slices.ContainsFunc(anchors.Anchors(), func(a *x509.Certificate) bool { return bundle.Fingerprint(a) == p.LeafAnchorSHA256 })
			},
		}
	}
	want := bundle.Fingerprint(anchors.Anchors()[0])
	return goal{
		what:  "leaves from anchor " + want[:12],
		proxy: func(p fleet.Proxy) bool { return p.BundleSHA256 == sha && p.LeafAnchorSHA256 == want },
	}
}

// await is met when every proxy of the fleet view (and every CA replica,
// if the goal counts them) is done, with at least one replica reporting;
// until then it says to wait, and fails once the wait has lasted Timeout,
// naming who holds it back.
func (d *decider) await(g goal) *Decision {
	o := d.o
	var lag []string
	total := 0
	for _, p := range o.Fleet.Proxies {
		total++
		// A stand-in for proxies a replica refused over a cap, or holds
		// in a shard that could not be read, is never done: those
		// proxies may hold anything.
		if p.StandIn() || !g.proxy(p) {
			lag = append(lag, p.Describe(o.Now))
		}
	}
	slices.Sort(lag)
	if g.replica != nil {
		for _, r := range o.Fleet.Replicas {
			total++
			if !g.replica(r) {
				lag = append(lag, "CA replica "+r.Replica)
			}
		}
	}
	var msg string
	switch {
	case len(o.Fleet.Replicas) == 0:
		msg = "no CA replica has published a fleet report (is meshid-ca running, and allowed to write ConfigMaps " + fleet.ConfigMapPrefix + "*?)"
	case len(lag) > 0:
		msg = fmt.Sprintf("%d/%d converged on %s; waiting for %s", total-len(lag), total, g.what, strings.Join(first(lag, 5), ", "))
	default:
		d.met = append(d.met, Met{Goal: g.what, Line: fmt.Sprintf("stage %s: converged on %s (%d proxies, %d CA replicas)", o.State.Stage, g.what, len(o.Fleet.Proxies), len(o.Fleet.Replicas))})
		return nil
	}
	return d.wait(g.what, msg, &Failure{
		Reason: ReasonTimeout,
		Detail: fmt.Sprintf("stage %s did not converge within %s: %s", o.State.Stage, o.Timeout, msg),
		Hint:   "fix them and run resume (or abort)",
	})
}

// wait says to wait for goal, or, once this run has waited for it for
// Timeout, to fail with timeout.
func (d *decider) wait(goal, msg string, timeout *Failure) *Decision {
	o := d.o
	deadline := o.Now.Add(o.Timeout)
	if o.Waiting.Goal == goal && !o.Waiting.Since.IsZero() {
		deadline = o.Waiting.Since.Add(o.Timeout)
	}
	x := d.decide(Decision{Kind: Wait, Goal: goal, Message: msg, Deadline: deadline})
	if !o.Now.Before(deadline) {
		x.Kind, x.Failure = Fail, timeout
	}
	return &x
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// Abortable returns nil when the rotation can be aborted, or why not.
func (s *State) Abortable() error {
	switch {
	case s == nil:
		return &Failure{Reason: ReasonState, Detail: "no rotation to abort"}
	case s.Stage.Finished():
		return &Failure{Reason: ReasonState, Detail: "the rotation is already " + string(s.Stage)}
	case s.Stage == Remove:
		return &Failure{Reason: ReasonNoWayBack, Detail: "too late to abort: the old anchor is being removed and every leaf already comes from the new one", Hint: "finish with resume"}
	case s.Emergency:
		return &Failure{Reason: ReasonNoWayBack, Detail: "an emergency rotation cannot go back to the expired material", Hint: "finish with resume"}
	}
	return nil
}

// Stuck says whether a stored rotation is stuck at now, and why: its last
// run failed (State.Failed), or the wait it recorded passed its deadline,
// the stage timeout, with no run left to fail it (the run that waited was
// killed). A finished rotation, or one still within its wait, is not.
func Stuck(st *State, now time.Time) (why string, stuck bool) {
	switch {
	case st == nil || st.Stage.Finished():
		return "", false
	case st.Failed != nil:
		return fmt.Sprintf("the last run failed at %s (%s): %s", st.Failed.At.UTC().Format(time.RFC3339), st.Failed.Reason, st.Failed.Detail), true
	case st.Wait != nil && !now.Before(st.Wait.Deadline):
		return fmt.Sprintf("stage %s has waited for %s since %s, past its stage timeout (%s), and no run is advancing it", st.Stage, st.Wait.Goal, st.Wait.Since.UTC().Format(time.RFC3339), st.Wait.Deadline.UTC().Format(time.RFC3339)), true
	}
	return "", false
}
