package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/explain"
	"github.com/meshid/meshid/identity"
)

func newPolicyCommand(connect kube.Connect, run func(ctx context.Context, o *explain.Options, out io.Writer) error, list func(ctx context.Context, o *explain.ListOptions, out io.Writer) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain and list what meshid-proxy's policy allows",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPolicyExplainCommand(connect, run), newPolicyListCommand(connect, list))
	return cmd
}

func newPolicyListCommand(connect kube.Connect, run func(ctx context.Context, o *explain.ListOptions, out io.Writer) error) *cobra.Command {
	o := &explain.ListOptions{Connect: connect}
	cmd := &cobra.Command{
		Use:   "list [-n NAMESPACE]",
		Short: "Show, per pod and port, who may connect and what they may ask",
		Long: strings.TrimSpace(`
list reads the pods and AuthorizationPolicies of --namespace and shows, for
every pod and every port its policies name, the connection mode and allow
rules, then one line per request rule: the policy and rule (and audit when
it only audits), who it applies to (FROM) and the requests it allows. A port
without request rules lets every admitted caller ask anything (REQUESTS
any). The policies are merged as meshid-ca merges them for each pod's
proxy; ports no policy names use --default-mode. Your RBAC needs list pods
and list authorizationpolicies.meshid.dev.

` + cli.ExitCodes),
		Example: `  meshid policy list -n shop
  meshid policy list -n shop -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return cli.Usagef("list takes flags only (see %s --help)", cmd.CommandPath())
			}
			return o.Validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace of the pods and policies")
	fs.StringVar(&o.DefaultMode, "default-mode", "", "the proxies' --default-mode, for ports no policy names (default deny)")
	fs.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	o.Cluster.AddFlags(fs)
	return cmd
}

func newPolicyExplainCommand(connect kube.Connect, run func(ctx context.Context, o *explain.Options, out io.Writer) error) *cobra.Command {
	o := &explain.Options{Connect: connect}
	cmd := &cobra.Command{
		Use:   "explain --from ID --port P (--to POD | --policy FILE) [--method M --path X [--host H] | --grpc S/M]",
		Short: "Say whether a caller may connect or make a request, and which rule decides",
		Long: strings.TrimSpace(`
explain prints the decision meshid-proxy would make on a connection from
--from to --port, or on one request over it, and the rule that decided: the
one that allowed, or the first that names the caller and did not match, with
why (method_not_allowed, path_not_allowed, host_not_allowed,
grpc_method_not_allowed, not_grpc, peer_not_named: no request rule names the
caller, peer_denied: the connection rules do not admit it, invalid_path: the
path is refused before any rule). It runs the proxy's own decision code
(package policy), on the path as the proxy normalises it (printed as
MATCHED AS).

The policy is the cluster's: the AuthorizationPolicies of --namespace that
select the pod --to, merged as meshid-ca merges them for that pod's proxy
(read with your own RBAC: get pods, list authorizationpolicies.meshid.dev);
or a proxy's --policy FILE. --default-mode is the proxy's, for ports no
policy names.

Exit 1 when the caller would be denied (audit mode allows, and says so).

` + cli.ExitCodes),
		Example: `  meshid policy explain -n shop --to db-0 --port 8080 --from shop/web --method DELETE --path /api/orders/1
  meshid policy explain -n shop --to db-0 --port 9090 --from spiffe://cluster.local/ns/billing/sa/refunder --grpc payments.v1.Charge/Refund
  meshid policy explain --policy policy.yaml --port 8443 --from plain -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return cli.Usagef("explain takes flags only (see %s --help)", cmd.CommandPath())
			}
			return o.Validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.From, "from", "", "the caller: a SPIFFE ID, NAMESPACE/NAME of a service account, or plain (no certificate)")
	fs.IntVar(&o.Port, "port", 0, "the inbound listen port of the proxy")
	fs.StringVar(&o.To, "to", "", "the pod whose proxy decides (its live AuthorizationPolicies)")
	fs.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace of --to")
	fs.StringVar(&o.PolicyFile, "policy", "", "a proxy's --policy file, instead of --to")
	fs.StringVar(&o.DefaultMode, "default-mode", "", "the proxy's --default-mode, for ports no policy names (default deny)")
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain")
	fs.StringVar(&o.Method, "method", "", "HTTP method of the request (default GET when --path is set)")
	fs.StringVar(&o.Path, "path", "", "path of the request, as sent (default / when --method is set)")
	fs.StringVar(&o.Host, "host", "", "Host (or :authority) of the request")
	fs.StringVar(&o.GRPC, "grpc", "", "a gRPC call instead: SERVICE/METHOD")
	fs.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	o.Cluster.AddFlags(fs)
	return cmd
}
