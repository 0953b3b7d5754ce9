package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/anchor"
)

func newRotateCommand(connect kube.Connect, run func(ctx context.Context, o *anchor.Options, verb string, out io.Writer) error) *cobra.Command {
	o := &anchor.Options{Connect: connect}
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
converge within --stage-timeout stops and names the proxies holding it back;
status then says the rotation is stuck and exits 1 (as it does when a stage's
wait has passed its timeout with no run left to end it). abort goes back from
any stage before Remove; abort --force removes the stored rotation state from
any stage, changes nothing else, and says what it leaves: the bundle as
published, the issuer in its Secret, and the saved keys (Secret
meshid-rotation, kept: a new start refuses until it is deleted).

--write-anchor-key writes a new file (mode 0600); an existing file is never
replaced. Everything start can check (the key file's path, another rotation,
an emergency on healthy material) is checked before a new anchor is generated.

--emergency is for when the anchor or issuer has already expired: it does not
depend on the old material; it publishes the new anchor and issuer at once, and
proxies take them from the CA's bundle stream and renew, without restarts.

` + cli.ExitCodes),
		Example: `  meshid rotate-anchor plan
  meshid rotate-anchor start --generate --write-anchor-key new-anchor.key
  meshid rotate-anchor status
  meshid rotate-anchor resume
  meshid rotate-anchor start --emergency --new-anchor-cert a.crt --new-anchor-key a.key
  meshid rotate-anchor abort --force`,
	}
	pf := cmd.PersistentFlags()
	o.Cluster.AddFlags(pf)
	pf.StringVarP(&o.Namespace, "namespace", "n", "meshid", "namespace of meshid-ca")
	pf.DurationVar(&o.StageTimeout, "stage-timeout", 10*time.Minute, "stop when a stage has not converged after this long")
	pf.StringVarP(&o.Output, "output", "o", "table", "output format: table or json (start, resume, abort: a JSON object per line, progress events then a summary)")

	verb := func(use, short string) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cli.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o, use, cmd.OutOrStdout()) },
		}
	}
	start := verb(anchor.Start, "Start a rotation and run it to the end")
	start.PreRunE = func(*cobra.Command, []string) error { return o.ValidateStart() }
	sf := start.Flags()
	sf.StringVar(&o.NewAnchorCert, "new-anchor-cert", "", "the new anchor (PEM)")
	sf.StringVar(&o.NewAnchorKey, "new-anchor-key", "", "its private key")
	sf.BoolVar(&o.Generate, "generate", false, "generate the new anchor")
	sf.Var(cli.Duration{D: &o.AnchorTTL}, "anchor-ttl", "lifetime of a generated anchor (default 3650d)")
	sf.StringVar(&o.WriteAnchorKey, "write-anchor-key", "", "save a generated anchor's key to this new file (mode 0600; an existing file is never replaced)")
	sf.BoolVar(&o.CertManager, "cert-manager", false, "cert-manager issues the issuer (meshid install --cert-manager)")
	sf.BoolVar(&o.Emergency, "emergency", false, "the old anchor or issuer has expired: replace both at once")
	sf.BoolVar(&o.Force, "force", false, "with --emergency: switch at once even though the current anchor and issuer pass meshid check")
	sf.DurationVar(&o.ReissueWindow, "reissue-window", 30*time.Second, "spread the proxies' renewals in stage Reissue over this long")

	abort := verb(anchor.Abort, "Go back to the old anchor (before stage Remove), or with --force remove the rotation state")
	abort.Flags().BoolVar(&o.AbortForce, "force", false, "remove the stored rotation state at any stage and change nothing else; prints what is left (bundle, issuer, saved keys)")
	status := verb(anchor.Status, "Show the stage, the convergence counts and who is lagging; exit 1 when stuck")
	cmd.AddCommand(
		verb(anchor.Plan, "Print what each stage will do and wait for"),
		start,
		status,
		verb(anchor.Resume, "Continue an interrupted rotation"),
		abort,
	)
	return cmd
}
