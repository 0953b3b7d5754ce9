package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/workload"
	"github.com/meshid/meshid/identity"
)

type workloadRun func(ctx context.Context, o *workload.Options, out io.Writer) error

// newWorkloadCommand is meshid workload: join, revoke, list.
func newWorkloadCommand(connect kube.Connect, join, revoke, list workloadRun) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "Join machines outside the cluster to the mesh as ExternalWorkloads, list and revoke them",
		Long: strings.TrimSpace(`
An ExternalWorkload (meshid.dev/v1alpha1) is a VM, a bare-metal host or a
laptop that gets the SPIFFE identity of a service account of its namespace.
Create the object (kubectl apply), then:

  join NAME    make a one-time join token (256 random bits; the cluster keeps
               only its SHA-256, with an expiry) and print the meshid-proxy
               command, or with --systemd a unit, to run on the machine. The
               proxy exchanges the token for its first certificate, and renews
               by proving the current one (mTLS); no service-account token.
  revoke NAME  stop its renewals at once (and cancel a pending token), and
               print how long its last certificate still lives
  list         who joined, when meshid-ca last saw them, certificate expiry

Deleting the ExternalWorkload stops renewals at once too. meshid-ca must run
with --external-workloads (meshid install --external-workloads).

` + cli.ExitCodes),
	}
	cmd.AddCommand(
		newWorkloadJoinCommand(connect, join),
		newWorkloadNameCommand(connect, "revoke NAME", "Stop an ExternalWorkload's renewals now; print its last certificate's remaining lifetime", revoke),
		newWorkloadListCommand(connect, list),
	)
	return cmd
}

func workloadOptions(connect kube.Connect) *workload.Options {
	return &workload.Options{Connect: connect, TTL: external.DefaultTokenTTL, TrustDomain: identity.DefaultTrustDomain, Output: "text"}
}

func addWorkloadFlags(cmd *cobra.Command, o *workload.Options) {
	fs := cmd.Flags()
	fs.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace of the ExternalWorkload")
	fs.StringVarP(&o.Output, "output", "o", "text", "output format: text or json")
	o.Cluster.AddFlags(fs)
}

func newWorkloadJoinCommand(connect kube.Connect, run workloadRun) *cobra.Command {
	o := workloadOptions(connect)
	cmd := &cobra.Command{
		Use:   "join NAME",
		Short: "Make a one-time join token for an ExternalWorkload and print the command that uses it",
		Long: strings.TrimSpace(`
join writes a new join token's SHA-256 and expiry into the ExternalWorkload's
status (a pending one is replaced) and prints the token once, with the
meshid-proxy command to run on the machine (--systemd: a systemd unit). The
paths and addresses in that command are the flags below, as seen from the
machine. The token is a secret until it is used: it is accepted once, for
--ttl.`),
		Example: `  meshid workload join vm-1 -n shop --ca ca.example.com:8443
  meshid workload join vm-1 -n shop --ca ca.example.com:8443 --systemd \
    --proxy-arg=--inbound=:8443=127.0.0.1:5432 --proxy-arg=--policy=/etc/meshid/policy.yaml`,
		Args:    cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	addWorkloadFlags(cmd, o)
	fs := cmd.Flags()
	fs.DurationVar(&o.TTL, "ttl", external.DefaultTokenTTL, "how long the join token is accepted (at most 24h)")
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&o.ControlPlane, "control-plane-namespace", "meshid", "namespace of meshid-ca and the trust bundle")
	fs.StringVar(&o.CA, "ca", "meshid-ca.meshid.svc:8443", "meshid-ca's address as the machine reaches it (host:port)")
	cli.AddCAIDFlag(fs, &o.CAID)
	fs.StringVar(&o.TokenFile, "join-token-file", "/etc/meshid/join-token", "where the machine keeps the token")
	fs.StringVar(&o.BundleFile, "trust-bundle-file", "/etc/meshid/ca-bundle.crt", "where the machine keeps the trust bundle")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/meshid-proxy", "where meshid-proxy keeps its key and certificate on the machine")
	fs.StringVar(&o.Binary, "proxy-binary", "/usr/local/bin/meshid-proxy", "meshid-proxy's path on the machine")
	fs.StringArrayVar(&o.ProxyArgs, "proxy-arg", nil, "another meshid-proxy flag for the printed command, e.g. --proxy-arg=--inbound=:8443=127.0.0.1:8080 (repeatable)")
	fs.BoolVar(&o.Systemd, "systemd", false, "print a systemd unit (hardened, its state dir managed by systemd) instead of a command")
	return cmd
}

func newWorkloadNameCommand(connect kube.Connect, use, short string, run workloadRun) *cobra.Command {
	o := workloadOptions(connect)
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Args:    cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	addWorkloadFlags(cmd, o)
	return cmd
}

func newWorkloadListCommand(connect kube.Connect, run workloadRun) *cobra.Command {
	o := workloadOptions(connect)
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List ExternalWorkloads: state, last seen, certificate expiry",
		Args:    cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	addWorkloadFlags(cmd, o)
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "every namespace's")
	return cmd
}
