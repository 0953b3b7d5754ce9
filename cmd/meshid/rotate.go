package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/anchor"
)

type rotateOptions struct {
	kubeconfig     string
	namespace      string
	newAnchorCert  string
	newAnchorKey   string
	generate       bool
	writeAnchorKey string
	certManager    bool
	emergency      bool
	force          bool
	stageTimeout   time.Duration
	reissueWindow  time.Duration
	anchorTTL      time.Duration
	output         string
}

func newRotateCommand() *cobra.Command {
	o := &rotateOptions{}
	cmd := &cobra.Command{
		Use:   "rotate-anchor",
		Short: "Rotate the trust anchor with no downtime, verified at every stage",
		Long: strings.TrimSpace(`
rotate-anchor replaces the trust anchor every workload trusts, in stages that
each advance only when the whole fleet has converged (as every proxy reports
to the CA replicas), never on a timer:

  1 Add           publish a bundle with the old and the new anchor; wait until
                  every proxy and CA replica holds it, and meshid check passes
  2 SwitchIssuer  issue the issuer from the new anchor (with --cert-manager:
                  give cert-manager the new anchor and have it re-issue); wait
                  until every CA replica signs with it
  3 Reissue       ask proxies to renew within --reissue-window; wait until
                  every live leaf comes from the new issuer
  4 Remove        publish the new anchor alone; wait until every proxy holds it
  5 Done          a final check, and the time each stage took

The state is kept in the cluster (ConfigMap and Secret meshid-rotation), so an
interrupted rotation is continued with resume, by anyone. A stage that cannot
converge within --stage-timeout stops and names the proxies holding it back.
abort goes back from any stage before Remove.

--emergency is for when the anchor or issuer has already expired: it does not
depend on the old material; it publishes the new anchor and issuer at once, and
proxies take them from the CA's bundle stream and renew, without restarts.

` + cli.ExitCodes),
		Example: `  meshid rotate-anchor plan
  meshid rotate-anchor start --generate --write-anchor-key new-anchor.key
  meshid rotate-anchor status
  meshid rotate-anchor resume
  meshid rotate-anchor start --emergency --new-anchor-cert a.crt --new-anchor-key a.key`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	pf.StringVarP(&o.namespace, "namespace", "n", "meshid", "namespace of meshid-ca")
	pf.DurationVar(&o.stageTimeout, "stage-timeout", 10*time.Minute, "stop when a stage has not converged after this long")
	pf.StringVarP(&o.output, "output", "o", "table", "output format of status: table or json")

	start := &cobra.Command{
		Use:   "start",
		Short: "Start a rotation and run it to the end",
		Args:  cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			switch {
			case o.generate == (o.newAnchorCert != ""):
				return cli.Usagef("give the new anchor (--new-anchor-cert and --new-anchor-key) or --generate, not both")
			case (o.newAnchorCert == "") != (o.newAnchorKey == ""):
				return cli.Usagef("--new-anchor-cert and --new-anchor-key go together: the key issues the new issuer")
			case o.writeAnchorKey != "" && !o.generate:
				return cli.Usagef("--write-anchor-key only applies with --generate")
			case o.generate && o.writeAnchorKey == "" && !o.certManager:
				return cli.Usagef("--generate needs --write-anchor-key FILE: the new anchor's key issues every future issuer, and the rotation deletes its own copy when done")
			case o.force && !o.emergency:
				return cli.Usagef("--force only applies with --emergency")
			case o.reissueWindow <= 0:
				return cli.Usagef("--reissue-window must be positive")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRotate(cmd.Context(), o, "start", cmd.OutOrStdout())
		},
	}
	sf := start.Flags()
	sf.StringVar(&o.newAnchorCert, "new-anchor-cert", "", "the new anchor (PEM)")
	sf.StringVar(&o.newAnchorKey, "new-anchor-key", "", "its private key")
	sf.BoolVar(&o.generate, "generate", false, "generate the new anchor")
	sf.Var(cli.Duration{D: &o.anchorTTL}, "anchor-ttl", "lifetime of a generated anchor (default 3650d)")
	sf.StringVar(&o.writeAnchorKey, "write-anchor-key", "", "save a generated anchor's key here (mode 0600)")
	sf.BoolVar(&o.certManager, "cert-manager", false, "cert-manager issues the issuer (meshid install --cert-manager)")
	sf.BoolVar(&o.emergency, "emergency", false, "the old anchor or issuer has expired: replace both at once")
	sf.BoolVar(&o.force, "force", false, "with --emergency: switch at once even though the current anchor and issuer pass meshid check")
	sf.DurationVar(&o.reissueWindow, "reissue-window", 30*time.Second, "spread the proxies' renewals in stage Reissue over this long")

	simple := func(use, short string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cli.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return runRotate(cmd.Context(), o, use, cmd.OutOrStdout()) },
		}
	}
	cmd.AddCommand(
		simple("plan", "Print what each stage will do and wait for"),
		start,
		simple("status", "Show the stage, the convergence counts and who is lagging"),
		simple("resume", "Continue an interrupted rotation"),
		simple("abort", "Go back to the old anchor (before stage Remove)"),
	)
	return cmd
}

func runRotate(ctx context.Context, o *rotateOptions, verb string, out io.Writer) error {
	if verb == "plan" {
		return printPlan(out)
	}
	client, err := kube.KubeClient(o.kubeconfig, "meshid-rotate-anchor")
	if err != nil {
		return err
	}
	r, err := anchor.New(anchor.Config{Client: client, Namespace: o.namespace, StageTimeout: o.stageTimeout, Out: out})
	if err != nil {
		return err
	}
	switch verb {
	case "status":
		st, err := r.Status(ctx)
		if err != nil {
			return err
		}
		return printRotateStatus(out, o, st)
	case "resume":
		return r.Resume(ctx)
	case "abort":
		return r.Abort(ctx)
	}
	p := anchor.StartParams{CertManager: o.certManager, Emergency: o.emergency, Force: o.force, ReissueWindow: o.reissueWindow}
	if o.generate {
		ttl := o.anchorTTL
		if ttl == 0 {
			ttl = 3650 * 24 * time.Hour
		}
		kp, err := issuer.NewAnchor(issuer.CAParams{CommonName: "meshid trust anchor", NotBefore: time.Now().Add(-time.Hour), TTL: ttl})
		if err != nil {
			return err
		}
		p.NewAnchorCertPEM = kp.CertPEM()
		if p.NewAnchorKeyPEM, err = kp.KeyPEM(); err != nil {
			return err
		}
		fmt.Fprintf(out, "generated the new anchor %s (SHA-256 %s), valid until %s\n", kp.Cert.Subject.CommonName, kp.Fingerprint(), kp.Cert.NotAfter.UTC().Format(time.RFC3339))
		if o.writeAnchorKey != "" {
			if err := writeFile(o.writeAnchorKey, p.NewAnchorKeyPEM, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(out, "its private key is in %s (mode 0600)\n", o.writeAnchorKey)
		}
	} else {
		if p.NewAnchorCertPEM, err = os.ReadFile(o.newAnchorCert); err != nil {
			return err
		}
		if p.NewAnchorKeyPEM, err = os.ReadFile(o.newAnchorKey); err != nil {
			return err
		}
	}
	return r.Start(ctx, p)
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

func printRotateStatus(out io.Writer, o *rotateOptions, st *anchor.Status) error {
	if o.output == "json" {
		return writeJSON(out, st)
	}
	if st.State == nil {
		fmt.Fprintln(out, "no rotation has been started")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Stage\t%s%s\n", st.State.Stage, map[bool]string{true: " (aborting)", false: ""}[st.State.Aborting])
	fmt.Fprintf(tw, "Started\t%s (%s ago)\n", st.State.Started.UTC().Format(time.RFC3339), time.Since(st.State.Started).Round(time.Second))
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
	for _, s := range anchor.Stages {
		if d, ok := st.State.Timings[s]; ok {
			fmt.Fprintf(tw, "Took\t%s %s\n", s, d)
		}
	}
	return tw.Flush()
}
