package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/identity"
)

func newCheckCommand(connect kube.Connect, run func(context.Context, *check.Options, io.Writer) error) *cobra.Command {
	o := &check.Options{Connect: connect}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the trust chain and expiry of everything meshid trusts",
		Long: strings.TrimSpace(`
check reads the cluster and reports one row per check, with a hint for every
problem that names the command to run:
  - preflight first: the API server answers, the namespace exists, and RBAC
    allows the reads check makes; when one fails, what depends on it is
    skipped (SKIP) and says so;
  - what meshid-ca has in force, from each replica's fleet report
    (ConfigMaps meshid-fleet-*): the bundle and each anchor (named by its
    fingerprint, and what uses it), the issuer, and any update of either
    that a replica refused, holds back or lost, as a failing row of its own;
    without reports, the trust-bundle ConfigMap and the issuer Secret;
  - an anchor fails when it has expired and something chains to it (warns
    when nothing does), warns when it expires within --warn-within;
  - the issuer fails when it expires within its threshold: cert-manager's
    renewBefore when cert-manager manages it, else --issuer-warn-within,
    else a third of its lifetime;
  - with cert-manager, the Issuer's and the Certificate's Ready conditions
    and the anchor Secret;
  - the webhook's certificates, the meshid-ca Deployment's ready replicas;
  - the proxies the replicas report (summarised when many; -o json lists
    all), and with --proxies the live certificate of each one asked, its
    mode (transparent or explicit) and, when transparent, whether its pod's
    redirect is present and matching and its destinations fresh (a problem
    row when not).
The headline is the time to outage: the earliest expiry of what is in use.

Warnings exit 0 unless --fail-on-warning; failures exit 1, preflight ones
too. --watch checks again every --interval and prints a line when a row
changes (with -o json, the whole report as one JSON line).

` + cli.ExitCodes),
		Example: `  meshid check
  meshid check --proxies 10.0.3.7:15000,10.0.3.9:15000 --warn-within 90d -o json`,
		Args:    cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE:    func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o, cmd.OutOrStdout()) },
	}
	fs := cmd.Flags()
	addCheckedFlags(fs, o)
	fs.StringSliceVar(&o.Proxies, "proxies", nil, "admin addresses (host:port) of proxies whose live certificate, redirect and discovery to check")
	fs.BoolVar(&o.FailOnWarning, "fail-on-warning", false, "exit 1 on warnings too")
	fs.BoolVar(&o.Watch, "watch", false, "keep checking; print a line when something changes")
	fs.DurationVar(&o.Interval, "interval", 30*time.Second, "time between checks with --watch")
	fs.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	return cmd
}

// addCheckedFlags binds what check reads and its thresholds, for check and
// dashboard alike.
func addCheckedFlags(fs *pflag.FlagSet, o *check.Options) {
	o.Cluster.AddFlags(fs)
	fs.StringVarP(&o.Namespace, "namespace", "n", "meshid", "namespace of meshid-ca")
	fs.StringVar(&o.Bundle, "trust-bundle", "meshid-trust-bundle", "trust-bundle ConfigMap")
	fs.StringVar(&o.Issuer, "issuer-secret", "meshid-issuer", "issuer Secret")
	fs.StringVar(&o.Deployment, "deployment", "meshid-ca", "meshid-ca Deployment; empty skips the check")
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of the proxies' certificates")
	o.WarnWithin = 60 * 24 * time.Hour
	fs.Var(cli.Duration{D: &o.WarnWithin}, "warn-within", "warn when an anchor expires within this (e.g. 60d)")
	fs.Var(cli.Duration{D: &o.IssuerWarnWithin}, "issuer-warn-within", "fail when the issuer expires within this (default: cert-manager's renewBefore, else a third of its lifetime)")
}
