package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/dashboard"
)

func newDashboardCommand(connect kube.Connect, run func(context.Context, *dashboard.Options, io.Writer) error) *cobra.Command {
	o := &dashboard.Options{Connect: connect}
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve a local web dashboard of trust, expiry and the fleet",
		Long: strings.TrimSpace(`
dashboard serves web pages on http://127.0.0.1:PORT/ that read the cluster
with your kubeconfig, as you: it holds no rights of its own, so it shows what
you may read and says what you may not (the same preflight as meshid check).

  Trust   the time to outage; every anchor, issuer and certificate with an
          expiry on one timeline, with check's warning windows as lines; the
          rows and hints of meshid check, from the same code.
  Fleet   an anchor rotation in progress, stage by stage, with the counts
          of meshid rotate-anchor status (converged, lagging); every proxy
          the meshid-ca replicas report (identity, instance, certificate
          expiry, bundle, last report), failing and lagging ones first,
          with check's verdict on each.
  Policy  per namespace, who may call whom: a row per caller (the
          namespace's service accounts, the identities its policies name,
          plain TCP), a column per port of a meshed pod, each cell the
          decision of the pod's proxy on the policy meshid-ca sends it.

Pages are plain HTML, readable without JavaScript and printable; with it,
they update in place every --refresh (10 s). Nothing is loaded from
elsewhere.

It listens on loopback only and answers only requests whose Host names that
address (127.0.0.1, localhost or [::1] with the port): a web page elsewhere
cannot read it through a DNS name that points at 127.0.0.1. To open it from
another machine, tunnel the port (ssh -L 8099:127.0.0.1:8099 HOST). It sends
no key or token to the page: it reads what check reads, and shows
certificates' names, fingerprints and dates only. Ctrl-C stops it.

` + cli.ExitCodes),
		Example: `  meshid dashboard                       # http://127.0.0.1:8099/
  meshid dashboard --port 0 --context prod -n meshid-prod`,
		Args:    cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE:    func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o, cmd.OutOrStdout()) },
	}
	fs := cmd.Flags()
	addCheckedFlags(fs, &o.Check)
	fs.StringVar(&o.Address, "address", "127.0.0.1", "loopback address to listen on (127.0.0.1 or ::1)")
	fs.IntVar(&o.Port, "port", 8099, "port to listen on; 0 picks a free one")
	fs.DurationVar(&o.Refresh, "refresh", 10*time.Second, "how often open pages fetch themselves again and swap in what changed (with JavaScript)")
	return cmd
}
