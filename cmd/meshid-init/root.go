package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/proxy/redirect"
	"github.com/meshid/meshid/sidecar"
)

type options struct {
	inboundPort, outboundPort, adminPort uint16
	proxyUID                             uint32
	skipInbound, skipOutbound, skipCIDRs string
	stateFile                            string
	remove, dryRun                       bool
}

// config checks the options and turns them into a redirect.Config.
func (o *options) config() (redirect.Config, error) {
	cfg := redirect.Config{InboundPort: o.inboundPort, OutboundPort: o.outboundPort, AdminPort: o.adminPort, ProxyUID: o.proxyUID}
	var err error
	if cfg.SkipInboundPorts, err = redirect.ParsePorts(o.skipInbound); err != nil {
		return cfg, cli.Usagef("--skip-inbound-ports: %v", err)
	}
	if cfg.SkipOutboundPorts, err = redirect.ParsePorts(o.skipOutbound); err != nil {
		return cfg, cli.Usagef("--skip-outbound-ports: %v", err)
	}
	if cfg.SkipOutboundCIDRs, err = redirect.ParseCIDRs(o.skipCIDRs); err != nil {
		return cfg, cli.Usagef("--skip-outbound-cidrs: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &cli.UsageError{Err: err}
	}
	return cfg, nil
}

func newRootCommand(run func(ctx context.Context, o *options, cmd *cobra.Command) error) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "meshid-init",
		Short: "redirect a pod's TCP to meshid-proxy (nftables, in the pod's network namespace)",
		Long: strings.TrimSpace(`
meshid-init runs as the pod's first init container, in the pod's network
namespace, and programs one nftables table (inet meshid) through netlink:

  inbound TCP to any port     -> the proxy's --inbound-port
  outbound TCP to anywhere    -> the proxy's --outbound-port (on loopback)

except loopback, the proxy's own connections (--proxy-uid), the proxy's
--admin-port, and the ports and CIDRs given to skip. Running it again leaves
the same rules (the table is replaced in one transaction); --remove deletes
the table. It needs CAP_NET_ADMIN and nothing else; no nft or iptables
binary is used.

After programming, it reads the table back through netlink and compares it,
rule by rule, with what it meant to program; a difference fails (the pod
does not start half-redirected). With --state-file it writes what it
programmed and read back (ports, skipped ports and CIDRs, rules, present and
matching) as JSON: the proxy, which has no capability and so cannot read
nftables itself, shows that file on /identity.

` + cli.ExitCodes),
		Example: `  meshid-init --skip-inbound-ports 9100 --skip-outbound-cidrs 169.254.169.254/32
  meshid-init --state-file /var/run/meshid/redirect/state.json
  meshid-init --dry-run
  meshid-init --dry-run --remove
  meshid-init --remove`,
		Args: cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			_, err := o.config()
			return err
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o, cmd) },
	}
	fs := cmd.Flags()
	fs.Uint16Var(&o.inboundPort, "inbound-port", redirect.DefaultInboundPort, "the proxy's transparent inbound listener")
	fs.Uint16Var(&o.outboundPort, "outbound-port", redirect.DefaultOutboundPort, "the proxy's transparent outbound listener (on loopback)")
	fs.Uint16Var(&o.adminPort, "admin-port", sidecar.AdminPort, "the proxy's admin port, never redirected (probes, metrics)")
	fs.Uint32Var(&o.proxyUID, "proxy-uid", sidecar.ProxyUID, "the user the proxy runs as; its connections are never redirected")
	fs.StringVar(&o.skipInbound, "skip-inbound-ports", "", "comma-separated ports that reach the app directly, in plain")
	fs.StringVar(&o.skipOutbound, "skip-outbound-ports", "", "comma-separated destination ports that bypass the proxy")
	fs.StringVar(&o.skipCIDRs, "skip-outbound-cidrs", "", "comma-separated destination CIDRs that bypass the proxy")
	fs.StringVar(&o.stateFile, "state-file", "", "write what was programmed and read back here (JSON, for meshid-proxy --redirect-state-file)")
	fs.BoolVar(&o.remove, "remove", false, "delete the rule set instead")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the rules (with --remove: what would be deleted) and change nothing")
	cli.Setup(cmd)
	return cmd
}

func run(_ context.Context, o *options, cmd *cobra.Command) error {
	cfg, err := o.config()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	switch {
	case o.dryRun && o.remove:
		fmt.Fprintf(out, "would remove table inet %s\n", redirect.Table)
		if o.stateFile != "" {
			fmt.Fprintf(out, "would remove %s\n", o.stateFile)
		}
		return nil
	case o.dryRun:
		for _, r := range redirect.Rules(cfg) {
			fmt.Fprintln(out, r)
		}
		return nil
	case o.remove:
		if err := redirect.Remove(); err != nil {
			return fmt.Errorf("meshid-init: %w", err)
		}
		if o.stateFile != "" {
			if err := os.Remove(o.stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("meshid-init: %w", err)
			}
		}
		fmt.Fprintf(out, "removed table inet %s\n", redirect.Table)
		return nil
	}
	if err := redirect.Apply(cfg); err != nil {
		return fmt.Errorf("meshid-init: %w", err)
	}
	verr := redirect.Verify(cfg)
	if o.stateFile != "" {
		if err := redirect.WriteState(o.stateFile, redirect.NewState(cfg, verr, time.Now())); err != nil {
			return fmt.Errorf("meshid-init: --state-file: %w", err)
		}
	}
	if verr != nil {
		return fmt.Errorf("meshid-init: the table read back differs from what was programmed: %w", verr)
	}
	fmt.Fprintf(out, "programmed table inet %s: %d rules, read back and matching\n", redirect.Table, len(redirect.Rules(cfg)))
	return nil
}
