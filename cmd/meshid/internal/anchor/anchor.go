package anchor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/issuer"
	rotator "github.com/meshid/meshid/rotation/anchor"
)

// The verbs of rotate-anchor.
const (
	Plan   = "plan"
	Start  = "start"
	Status = "status"
	Resume = "resume"
	Abort  = "abort"
)

// Options are rotate-anchor's flags, and what tests replace.
type Options struct {
	// Cluster is the kubeconfig file and context; empty means $KUBECONFIG,
	// ~/.kube/config or the pod's configuration.
	Cluster kube.Target
	// Namespace of meshid-ca.
	Namespace string
	// StageTimeout stops a stage that has not converged after this long.
	StageTimeout time.Duration
	// Output is "json" (plan and status as one document; start, resume and
	// abort as one JSON object per line: progress events, then a summary),
	// else text.
	Output string

	// Start's flags: the new anchor from NewAnchorCert and NewAnchorKey, or
	// Generate one (of AnchorTTL, 0 meaning 3650 days) and save its key to
	// WriteAnchorKey; CertManager, Emergency, Force and ReissueWindow as in
	// rotation/anchor's StartParams.
	NewAnchorCert, NewAnchorKey string
	Generate                    bool
	AnchorTTL                   time.Duration
	WriteAnchorKey              string
	CertManager                 bool
	Emergency, Force            bool
	ReissueWindow               time.Duration

	// AbortForce is abort's --force: remove the stored rotation state and
	// change nothing else (rotation/anchor's ForceAbort).
	AbortForce bool

	// Connect builds the Kubernetes clients; nil means kube.NewClients.
	Connect kube.Connect
	// NewRotator builds the Rotator; nil means rotation/anchor's New.
	NewRotator func(rotator.Config) (Rotator, error)
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Rotator is what the verbs ask of rotation/anchor's Rotator.
type Rotator interface {
	CheckStart(context.Context, rotator.StartParams) error
	Start(context.Context, rotator.StartParams) error
	Resume(context.Context) error
	Abort(context.Context) error
	ForceAbort(context.Context) (*rotator.Leftovers, error)
	Status(context.Context) (*rotator.Status, error)
}

// ValidateStart refuses start's flags when they cannot work, as usage
// errors; the other verbs take no flags of their own.
func (o *Options) ValidateStart() error {
	switch {
	case o.Generate && o.NewAnchorCert != "":
		return cli.Usagef("give the new anchor (--new-anchor-cert and --new-anchor-key) or --generate, not both")
	case !o.Generate && o.NewAnchorCert == "" && o.NewAnchorKey == "":
		return cli.Usagef("start needs a new anchor: give --new-anchor-cert and --new-anchor-key, or --generate to make one")
	case (o.NewAnchorCert == "") != (o.NewAnchorKey == ""):
		return cli.Usagef("--new-anchor-cert and --new-anchor-key go together: the key issues the new issuer")
	case o.WriteAnchorKey != "" && !o.Generate:
		return cli.Usagef("--write-anchor-key only applies with --generate")
	case o.Generate && o.WriteAnchorKey == "" && !o.CertManager:
		return cli.Usagef("--generate needs --write-anchor-key FILE: the new anchor's key issues every future issuer, and the rotation deletes its own copy when done")
	case o.Force && !o.Emergency:
		return cli.Usagef("--force only applies with --emergency")
	case o.ReissueWindow <= 0:
		return cli.Usagef("--reissue-window must be positive")
	}
	return nil
}

func (o *Options) now() time.Time {
	if o.Clock == nil {
		return clock.RealClock{}.Now()
	}
	return o.Clock.Now()
}

// Run runs one verb, printing to out.
func Run(ctx context.Context, o *Options, verb string, out io.Writer) error {
	if verb == Plan {
		return printPlan(out, o)
	}
	connect := o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	c, err := connect(o.Cluster, "meshid-rotate-anchor")
	if err != nil {
		return err
	}
	newRotator := o.NewRotator
	if newRotator == nil {
		newRotator = func(cfg rotator.Config) (Rotator, error) { return rotator.New(cfg) }
	}
	cfg := rotator.Config{Client: c.Kube, Namespace: o.Namespace, StageTimeout: o.StageTimeout, Out: out}
	if o.Output == "json" {
		cfg.Events = func(e rotator.Event) { _ = output.JSONLine(out, progress{Type: "progress", Event: e}) }
	}
	r, err := newRotator(cfg)
	if err != nil {
		return err
	}
	switch verb {
	case Status:
		st, err := r.Status(ctx)
		if err != nil {
			return err
		}
		if st.State == nil {
			// No state: is it none started, or a namespace that is not
			// there? (Not allowed to read namespaces: it is the former.)
			if _, err := c.Kube.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %s does not exist: pass -n the namespace meshid is installed in", o.Namespace)
			}
		}
		return printStatus(out, o, st)
	case Resume:
		return summarize(ctx, o, r, out, r.Resume(ctx))
	case Abort:
		if o.AbortForce {
			left, err := r.ForceAbort(ctx)
			if err != nil {
				return err
			}
			return printLeftovers(out, o, left)
		}
		return summarize(ctx, o, r, out, r.Abort(ctx))
	case Start:
		p := rotator.StartParams{CertManager: o.CertManager, Emergency: o.Emergency, Force: o.Force, ReissueWindow: o.ReissueWindow}
		// Everything that can refuse the start is asked before a new
		// anchor is generated or its key file written.
		if o.WriteAnchorKey != "" {
			if err := output.CheckNew("--write-anchor-key", o.WriteAnchorKey); err != nil {
				return err
			}
		}
		if !o.Generate {
			if p.NewAnchorCertPEM, err = os.ReadFile(o.NewAnchorCert); err != nil {
				return err
			}
			if p.NewAnchorKeyPEM, err = os.ReadFile(o.NewAnchorKey); err != nil {
				return err
			}
			if _, err := issuer.Parse(p.NewAnchorCertPEM, p.NewAnchorKeyPEM); err != nil {
				return fmt.Errorf("--new-anchor-cert %s, --new-anchor-key %s: %s; give the new anchor's PEM certificate and its PEM private key", o.NewAnchorCert, o.NewAnchorKey, strings.TrimPrefix(err.Error(), issuer.ErrInvalid.Error()+": "))
			}
		}
		if err := r.CheckStart(ctx, p); err != nil {
			return err
		}
		if o.Generate {
			if err := generate(o, &p, cfg); err != nil {
				return err
			}
		}
		return summarize(ctx, o, r, out, r.Start(ctx, p))
	}
	return fmt.Errorf("rotate-anchor: unknown verb %q", verb)
}

// progress is a line of -o json: a progress event.
type progress struct {
	Type string `json:"type"` // "progress"
	rotator.Event
}

// Summary is the last line of start, resume and abort with -o json.
type Summary struct {
	Type string `json:"type"` // "summary"
	// Stage is where the rotation is, or ended ("" when none is stored).
	Stage   rotator.Stage            `json:"stage,omitempty"`
	Started time.Time                `json:"started,omitzero"`
	Timings map[rotator.Stage]string `json:"timings,omitempty"`
	// Error is why the run stopped; "" when it finished.
	Error string `json:"error,omitempty"`
}

// summarize returns runErr, after a summary line with -o json.
func summarize(ctx context.Context, o *Options, r Rotator, out io.Writer, runErr error) error {
	if o.Output != "json" {
		return runErr
	}
	sum := Summary{Type: "summary"}
	if runErr != nil {
		sum.Error = cli.Message(runErr)
	}
	if st, err := r.Status(context.WithoutCancel(ctx)); err == nil && st.State != nil {
		sum.Stage, sum.Started, sum.Timings = st.State.Stage, st.State.Started, st.State.Timings
	}
	if err := output.JSONLine(out, sum); err != nil {
		return err
	}
	return runErr
}

// generate makes the new anchor into p and saves its key (a new file, mode
// 0600).
func generate(o *Options, p *rotator.StartParams, cfg rotator.Config) error {
	ttl := o.AnchorTTL
	if ttl == 0 {
		ttl = 3650 * 24 * time.Hour
	}
	kp, err := issuer.NewAnchor(issuer.CAParams{CommonName: "meshid trust anchor", NotBefore: o.now().Add(-time.Hour), TTL: ttl})
	if err != nil {
		return err
	}
	p.NewAnchorCertPEM = kp.CertPEM()
	if p.NewAnchorKeyPEM, err = kp.KeyPEM(); err != nil {
		return err
	}
	if o.WriteAnchorKey != "" {
		if err := output.CreateFile(o.WriteAnchorKey, p.NewAnchorKeyPEM, 0o600); err != nil {
			return fmt.Errorf("--write-anchor-key: %w", err)
		}
	}
	say := func(msg string) {
		if cfg.Events != nil {
			cfg.Events(rotator.Event{Time: o.now(), Message: msg})
			return
		}
		fmt.Fprintln(cfg.Out, msg)
	}
	say(fmt.Sprintf("generated the new anchor %s (SHA-256 %s), valid until %s", kp.Cert.Subject.CommonName, kp.Fingerprint(), kp.Cert.NotAfter.UTC().Format(time.RFC3339)))
	if o.WriteAnchorKey != "" {
		say(fmt.Sprintf("its private key is in %s (mode 0600)", o.WriteAnchorKey))
	}
	return nil
}

// Step is one stage of the plan.
type Step struct {
	Stage        rotator.Stage `json:"stage"`
	Does         string        `json:"does"`
	AdvancesWhen string        `json:"advances_when"`
}

// plan is what each stage does and waits for, in order.
var plan = []Step{
	{rotator.Add, "publishes the bundle with the old and the new anchor", "every proxy and CA replica reports that bundle, and meshid check passes"},
	{rotator.SwitchIssuer, "issues the issuer from the new anchor (or has cert-manager do it)", "every CA replica signs with it"},
	{rotator.Reissue, "asks proxies to renew within --reissue-window", "every live leaf comes from the new issuer"},
	{rotator.Remove, "publishes the new anchor alone", "every proxy and CA replica reports that bundle, and meshid check passes"},
	{rotator.Done, "deletes the rotation's keys, prints the time per stage", "-"},
}

// Steps is the plan: what each stage does and waits for, in order (the
// dashboard shows it beside a rotation in progress).
func Steps() []Step { return slices.Clone(plan) }

func printPlan(out io.Writer, o *Options) error {
	if o.Output == "json" {
		return output.JSON(out, plan)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tDOES\tADVANCES WHEN")
	for i, s := range plan {
		fmt.Fprintf(tw, "%d %s\t%s\t%s\n", i+1, s.Stage, s.Does, s.AdvancesWhen)
	}
	return tw.Flush()
}

// printLeftovers says what abort --force removed and what it left.
func printLeftovers(out io.Writer, o *Options, left *rotator.Leftovers) error {
	if o.Output == "json" {
		return output.JSON(out, left)
	}
	removed := "the rotation state, which did not parse (ConfigMap " + o.Namespace + "/" + rotator.StateConfigMap + ")"
	switch {
	case !left.StateRemoved:
		removed = "nothing: no rotation state is stored"
	case left.Removed != "":
		removed = "the state of the rotation at stage " + string(left.Removed) + " (ConfigMap " + o.Namespace + "/" + rotator.StateConfigMap + ")"
	}
	fmt.Fprintf(out, "Removed %s. Nothing else was changed; the cluster holds:\n", removed)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	b := left.Bundle
	if b.Problem != "" {
		fmt.Fprintf(tw, "Bundle\t%s: %s\n", b.ConfigMap, b.Problem)
	} else {
		fmt.Fprintf(tw, "Bundle\t%s: %d anchor(s), SHA-256 %.12s\n", b.ConfigMap, len(b.Anchors), b.SHA256)
	}
	for _, a := range b.Anchors {
		role := a.Role
		if role == "" {
			role = "anchor"
		} else {
			role += " anchor"
		}
		fmt.Fprintf(tw, "  %s\t%s %.12s, valid until %s\n", role, a.Subject, a.SHA256, a.NotAfter.UTC().Format(time.RFC3339))
	}
	if b.ReissueWindow != "" {
		fmt.Fprintf(tw, "  re-issue window\t%s still set: proxies keep renewing early until it is removed\n", b.ReissueWindow)
	}
	if i := left.Issuer; i.Problem != "" {
		fmt.Fprintf(tw, "Issuer\t%s: %s\n", i.Secret, i.Problem)
	} else {
		fmt.Fprintf(tw, "Issuer\t%s: %s %.12s, valid until %s, chains to %s\n", i.Secret, i.Subject, i.SHA256, i.NotAfter.UTC().Format(time.RFC3339), i.ChainsTo)
	}
	if a := left.CertManagerAnchor; a != nil {
		fmt.Fprintf(tw, "cert-manager anchor\t%s %.12s (%s)\n", a.Subject, a.SHA256, a.Role)
	}
	if len(left.Keys) > 0 {
		fmt.Fprintf(tw, "Saved keys\tSecret %s, kept: %s\n", left.KeysSecret, strings.Join(left.Keys, ", "))
	} else {
		fmt.Fprintf(tw, "Saved keys\tnone (Secret %s is gone)\n", left.KeysSecret)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "Check the bundle and the issuer with meshid check. The next start refuses while the saved keys are there:")
	fmt.Fprintf(out, "keep what you need (kubectl -n %s get secret %s -o yaml), then kubectl -n %s delete secret %s.\n", o.Namespace, rotator.KeysSecret, o.Namespace, rotator.KeysSecret)
	return nil
}

// printStatus prints st; a stuck rotation exits 1, after the report.
func printStatus(out io.Writer, o *Options, st *rotator.Status) error {
	var stuck error
	if st.Stuck != "" {
		stuck = &cli.SilentError{Err: errors.New("rotate-anchor: the rotation is stuck: " + st.Stuck)}
	}
	if o.Output == "json" {
		if err := output.JSON(out, st); err != nil {
			return err
		}
		return stuck
	}
	if st.State == nil {
		fmt.Fprintln(out, "no rotation has been started")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Stage\t%s%s\n", st.State.Stage, map[bool]string{true: " (aborting)", false: ""}[st.State.Aborting])
	fmt.Fprintf(tw, "Started\t%s (%s ago)\n", st.State.Started.UTC().Format(time.RFC3339), o.now().Sub(st.State.Started).Round(time.Second))
	if st.Waiting != "" {
		fmt.Fprintf(tw, "Converged\t%d/%d %s\n", st.Ready, st.Total, st.Waiting)
	}
	for _, l := range st.Lagging {
		fmt.Fprintf(tw, "Lagging\t%s\n", l)
	}
	fmt.Fprintf(tw, "CA replicas\t%d reporting\n", len(st.Fleet.Replicas))
	if st.State.Message != "" {
		fmt.Fprintf(tw, "Last message\t%s\n", st.State.Message)
	}
	for _, s := range rotator.Stages {
		if d, ok := st.State.Timings[s]; ok {
			fmt.Fprintf(tw, "Took\t%s %s\n", s, d)
		}
	}
	if st.Stuck != "" {
		fmt.Fprintf(tw, "Stuck\t%s\n", cli.StyleFor(out).Bad(st.Stuck+": fix what holds it and run resume, or abort (abort --force removes the state and changes nothing else)"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return stuck
}
