package anchor

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

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
	// Kubeconfig is the kubeconfig file; empty means $KUBECONFIG,
	// ~/.kube/config or the pod's configuration.
	Kubeconfig string
	// Namespace of meshid-ca.
	Namespace string
	// StageTimeout stops a stage that has not converged after this long.
	StageTimeout time.Duration
	// Output of status: "json", else a table.
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

	// Connect builds the Kubernetes clients; nil means kube.NewClients.
	Connect kube.Connect
	// NewRotator builds the Rotator; nil means rotation/anchor's New.
	NewRotator func(rotator.Config) (Rotator, error)
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Rotator is what the verbs ask of rotation/anchor's Rotator.
type Rotator interface {
	Start(context.Context, rotator.StartParams) error
	Resume(context.Context) error
	Abort(context.Context) error
	Status(context.Context) (*rotator.Status, error)
}

// ValidateStart refuses start's flags when they cannot work, as usage
// errors; the other verbs take no flags of their own.
func (o *Options) ValidateStart() error {
	switch {
	case o.Generate == (o.NewAnchorCert != ""):
		return cli.Usagef("give the new anchor (--new-anchor-cert and --new-anchor-key) or --generate, not both")
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
		return printPlan(out)
	}
	connect := o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	c, err := connect(o.Kubeconfig, "meshid-rotate-anchor")
	if err != nil {
		return err
	}
	newRotator := o.NewRotator
	if newRotator == nil {
		newRotator = func(cfg rotator.Config) (Rotator, error) { return rotator.New(cfg) }
	}
	r, err := newRotator(rotator.Config{Client: c.Kube, Namespace: o.Namespace, StageTimeout: o.StageTimeout, Out: out})
	if err != nil {
		return err
	}
	switch verb {
	case Status:
		st, err := r.Status(ctx)
		if err != nil {
			return err
		}
		return printStatus(out, o, st)
	case Resume:
		return r.Resume(ctx)
	case Abort:
		return r.Abort(ctx)
	case Start:
		p, err := startParams(o, out)
		if err != nil {
			return err
		}
		return r.Start(ctx, p)
	}
	return fmt.Errorf("rotate-anchor: unknown verb %q", verb)
}

// startParams generates or reads the new anchor.
func startParams(o *Options, out io.Writer) (rotator.StartParams, error) {
	p := rotator.StartParams{CertManager: o.CertManager, Emergency: o.Emergency, Force: o.Force, ReissueWindow: o.ReissueWindow}
	var err error
	if !o.Generate {
		if p.NewAnchorCertPEM, err = os.ReadFile(o.NewAnchorCert); err != nil {
			return p, err
		}
		if p.NewAnchorKeyPEM, err = os.ReadFile(o.NewAnchorKey); err != nil {
			return p, err
		}
		return p, nil
	}
	ttl := o.AnchorTTL
	if ttl == 0 {
		ttl = 3650 * 24 * time.Hour
	}
	kp, err := issuer.NewAnchor(issuer.CAParams{CommonName: "meshid trust anchor", NotBefore: o.now().Add(-time.Hour), TTL: ttl})
	if err != nil {
		return p, err
	}
	p.NewAnchorCertPEM = kp.CertPEM()
	if p.NewAnchorKeyPEM, err = kp.KeyPEM(); err != nil {
		return p, err
	}
	fmt.Fprintf(out, "generated the new anchor %s (SHA-256 %s), valid until %s\n", kp.Cert.Subject.CommonName, kp.Fingerprint(), kp.Cert.NotAfter.UTC().Format(time.RFC3339))
	if o.WriteAnchorKey != "" {
		if err := output.WriteFile(o.WriteAnchorKey, p.NewAnchorKeyPEM, 0o600); err != nil {
			return p, err
		}
		fmt.Fprintf(out, "its private key is in %s (mode 0600)\n", o.WriteAnchorKey)
	}
	return p, nil
}

func printPlan(out io.Writer) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tDOES\tADVANCES WHEN")
	fmt.Fprintln(tw, "1 Add\tpublishes the bundle with the old and the new anchor\tevery proxy and CA replica reports that bundle, and meshid check passes")
	fmt.Fprintln(tw, "2 SwitchIssuer\tissues the issuer from the new anchor (or has cert-manager do it)\tevery CA replica signs with it")
	fmt.Fprintln(tw, "3 Reissue\tasks proxies to renew within --reissue-window\tevery live leaf comes from the new issuer")
	fmt.Fprintln(tw, "4 Remove\tpublishes the new anchor alone\tevery proxy and CA replica reports that bundle, and meshid check passes")
	fmt.Fprintln(tw, "5 Done\tdeletes the rotation's keys, prints the time per stage\t-")
	return tw.Flush()
}

func printStatus(out io.Writer, o *Options, st *rotator.Status) error {
	if o.Output == "json" {
		return output.JSON(out, st)
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
	return tw.Flush()
}
