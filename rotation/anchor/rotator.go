package anchor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
)

// Names of the objects that hold a rotation.
const (
	StateConfigMap = "meshid-rotation"
	StateKey       = "state.json"
	KeysSecret     = "meshid-rotation"
)

// Config configures a Rotator.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// Namespace of meshid-ca; "meshid" when empty.
	Namespace string
	// StageTimeout bounds how long one stage waits to converge; 0 means
	// DefaultStageTimeout (10 min).
	StageTimeout time.Duration
	// Poll bounds how long a wait goes without looking again when no
	// ConfigMap or Secret of the namespace changes (a replica going stale
	// or a proxy falling silent changes the fleet view with no write); 0
	// means 2 s.
	Poll time.Duration
	// IssuerTTL is the lifetime of an issuer made from the new anchor (not
	// in cert-manager mode); 0 means the old issuer's lifetime.
	IssuerTTL time.Duration
	// Out receives progress lines ("15:04:05  stage Add: ..."), unless
	// Events is set; nil discards.
	Out io.Writer
	// Events, when set, receives each progress line as an Event instead
	// of Out.
	Events func(Event)
	// Clock tells the time and paces the waits; nil means the real clock.
	Clock clock.Clock
}

// Event is one line of a run's progress.
type Event struct {
	Time time.Time `json:"time"`
	// Stage is the stage the run is at ("" before it has one).
	Stage   Stage  `json:"stage,omitempty"`
	Message string `json:"message"`
}

// Rotator runs rotations.
type Rotator struct {
	cfg     Config
	clock   clock.Clock
	version string // resourceVersion of the state this run loaded or saved
	stage   Stage  // the stage of the run, for Events
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
		cfg.StageTimeout = DefaultStageTimeout
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Rotator{cfg: cfg, clock: cfg.Clock}, nil
}

func (r *Rotator) say(format string, args ...any) {
	ev := Event{Time: r.clock.Now(), Stage: r.stage, Message: fmt.Sprintf(format, args...)}
	if r.cfg.Events != nil {
		r.cfg.Events(ev)
		return
	}
	fmt.Fprintf(r.cfg.Out, "%s  %s\n", ev.Time.UTC().Format("15:04:05"), ev.Message)
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

// CheckStart refuses what Start would refuse before it looks at the new
// anchor: another rotation unfinished, keys left by one that was removed,
// no bundle to rotate from, an emergency switch away from healthy material
// without Force. p's anchor fields are not read. A caller that generates
// the new anchor calls it first, so a refusal costs no key.
func (r *Rotator) CheckStart(ctx context.Context, p StartParams) error {
	_, err := r.checkStart(ctx, p)
	return err
}

// checkStart is CheckStart; it returns the bundle in place.
func (r *Rotator) checkStart(ctx context.Context, p StartParams) ([]byte, error) {
	cur, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	if cur != nil && !cur.Stage.Finished() {
		return nil, fmt.Errorf("anchor: a rotation started at %s is at stage %s; resume or abort it first", cur.Started.UTC().Format(time.RFC3339), cur.Stage)
	}
	if keys, err := r.loadKeys(ctx); err != nil {
		return nil, err
	} else if len(keys.names()) > 0 {
		hint := "they were left by a rotation removed with abort --force: save what you need (kubectl -n " + r.cfg.Namespace + " get secret " + KeysSecret + " -o yaml), then kubectl -n " + r.cfg.Namespace + " delete secret " + KeysSecret
		if cur != nil {
			hint = "they belong to the " + strings.ToLower(string(cur.Stage)) + " rotation: resume deletes them"
		}
		return nil, fmt.Errorf("anchor: Secret %s/%s still holds a rotation's keys (%s), and a new rotation would replace them; %s", r.cfg.Namespace, KeysSecret, strings.Join(keys.names(), ", "), hint)
	}
	oldBundle, err := r.bundlePEM(ctx)
	if err != nil && !p.Emergency {
		return nil, err
	}
	if p.Emergency && !p.Force && r.check(ctx) == nil {
		return nil, errors.New("anchor: the anchor and issuer in use are healthy (meshid check passes): an emergency switch would break every peer at once; run a staged rotation, or add --force")
	}
	return oldBundle, nil
}

// Start records a new rotation and runs it. It refuses what CheckStart
// refuses, and a new anchor that is not valid now or already in the bundle.
func (r *Rotator) Start(ctx context.Context, p StartParams) error {
	oldBundle, err := r.checkStart(ctx, p)
	if err != nil {
		return err
	}
	anchor, err := issuer.Parse(p.NewAnchorCertPEM, p.NewAnchorKeyPEM)
	if err != nil {
		return fmt.Errorf("anchor: the new anchor: %w", err)
	}
	now := r.clock.Now()
	if err := anchor.CheckValidity(now); err != nil {
		return fmt.Errorf("anchor: the new anchor: %w", err)
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
	r.stage = st.Stage
	if err := r.saveKeys(ctx, Saved{NewAnchorKey: p.NewAnchorKeyPEM}); err != nil {
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
	if err := st.Abortable(); err != nil {
		return err
	}
	st.Aborting = true
	st.Message = ""
	if err := r.save(ctx, st); err != nil {
		return err
	}
	r.say("aborting from stage %s", st.Stage)
	return r.run(ctx, st)
}

// Status is what `meshid rotate-anchor status` shows.
type Status struct {
	State   *State     `json:"state"`
	Fleet   fleet.View `json:"fleet"`
	Waiting string     `json:"waiting_for,omitempty"`
	Ready   int        `json:"converged"`
	Total   int        `json:"total"`
	Lagging []string   `json:"lagging,omitempty"`
	// Stuck says why the rotation is stuck (see Stuck); "" when it is not.
	Stuck string `json:"stuck,omitempty"`
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
	out.Stuck, _ = Stuck(st, r.clock.Now())
	if st == nil || st.Stage.Finished() {
		return out, nil
	}
	what, done := statusGoal(st)
	if done != nil {
		out.Waiting = what
		out.Lagging = view.Lagging(done)
		out.Total = len(view.Proxies)
		out.Ready = out.Total - len(out.Lagging)
	}
	return out, nil
}

// statusGoal says what the current stage waits for, as status counts it:
// by the proxies alone.
func statusGoal(st *State) (string, func(fleet.Proxy) bool) {
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
