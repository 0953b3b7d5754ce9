package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/verify"
	"github.com/meshid/meshid/identity"
)

func newVerifyCommand(connect kube.Connect, run func(ctx context.Context, o *verify.Options, addr string, out io.Writer) error) *cobra.Command {
	o := &verify.Options{Connect: connect}
	cmd := &cobra.Command{
		Use:   "verify ADDR",
		Short: "Make a real mTLS handshake to a meshed endpoint and report who answered",
		Long: strings.TrimSpace(`
verify connects to ADDR (an inbound port of meshid-proxy, or any SPIFFE mTLS
server) as a chosen identity and reports the server's SPIFFE ID, chain, expiry,
the anchor that validated it, the TLS version and cipher, and whether the
server accepted us: a policy refusal is reported as such, not as a network
error, and a server that does not ask for a client certificate is reported
as plain TLS, not mTLS.

A transparent pod (injected, meshid-init redirecting its TCP) is verified on
its app's own port, POD_IP:PORT: verify offers meshid's ALPN (meshid/1), as
a meshed peer's proxy does, so the pod's proxy terminates the mTLS and
applies that port's policy; the ALPN line says when the server chose it.

Connect as a service account with --as NAMESPACE/NAME (verify gets a token
with the TokenRequest API and a certificate from meshid-ca at --ca, as a
workload would), or with a certificate you have (--cert, --key). The trust
bundle is --trust-bundle-file, or else the cluster's ConfigMap. --ca's
default is meshid-ca's in-cluster address: from a workstation, run
kubectl -n meshid port-forward svc/meshid-ca 8443 and pass --ca 127.0.0.1:8443.

Exit 1 when the server's certificate does not verify, the server refused us
or did not ask for a client certificate, or --expect-id does not match.

` + cli.ExitCodes),
		Example: `  meshid verify 10.0.3.7:8080 --as shop/web --ca 127.0.0.1:8443   # a transparent pod's app port
  meshid verify 10.0.3.7:8443 --as shop/web --ca 127.0.0.1:8443 --expect-id spiffe://cluster.local/ns/shop/sa/db
  meshid verify db.shop.svc:8443 --cert svid.pem --key svid.key --trust-bundle-file ca-bundle.crt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef("verify takes one ADDR (host:port) (see %s --help)", cmd.CommandPath())
			}
			return o.Validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.As, "as", "", "connect as this service account: NAMESPACE/NAME")
	fs.StringVar(&o.CertFile, "cert", "", "connect with this PEM certificate chain instead")
	fs.StringVar(&o.KeyFile, "key", "", "the private key of --cert")
	fs.StringVar(&o.CA, "ca", "meshid-ca.meshid.svc:8443", "meshid-ca address, for --as (in-cluster; from a workstation: kubectl -n meshid port-forward svc/meshid-ca 8443, then --ca 127.0.0.1:8443)")
	cli.AddCAIDFlag(fs, &o.CAID)
	fs.StringVar(&o.Audience, "audience", identity.DefaultAudience, "token audience the CA expects, for --as")
	o.Cluster.AddFlags(fs)
	fs.StringVarP(&o.Namespace, "namespace", "n", "meshid", "namespace of the trust-bundle ConfigMap")
	fs.StringVar(&o.BundleName, "trust-bundle", "meshid-trust-bundle", "trust-bundle ConfigMap, when no --trust-bundle-file")
	fs.StringVar(&o.BundleFile, "trust-bundle-file", "", "PEM trust anchors")
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain")
	fs.StringVar(&o.ExpectID, "expect-id", "", "exit 1 unless the server presents this SPIFFE ID")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Second, "give up after this long")
	fs.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	return cmd
}
