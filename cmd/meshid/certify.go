package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/certify"
	"github.com/meshid/meshid/identity"
)

func newCertifyCommand(run func(context.Context, *certify.Options, io.Writer) error) *cobra.Command {
	o := &certify.Options{}
	cmd := &cobra.Command{
		Use:   "certify",
		Short: "Get a workload certificate from meshid-ca, as a workload would",
		Long: strings.TrimSpace(`
certify does what meshid-proxy does at start-up: it generates a fresh ECDSA
P-256 key, sends a CSR and the service-account token in --token-file to
meshid-ca (verifying the CA's own SPIFFE ID against --trust-bundle-file), and
checks the answer is an X.509-SVID for that key. It prints the SPIFFE ID,
the chain and the expiry; with --out-dir it writes svid.pem, svid.key (mode
0600) and bundle.pem there.`),
		Example: `  kubectl -n shop create token checkout --audience identity.meshid.dev > token
  meshid certify --ca 127.0.0.1:8443 --token-file token --trust-bundle-file anchors.pem`,
		Args:    cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.CA, "ca", "", "meshid-ca gRPC address (host:port)")
	cli.AddCAIDFlag(fs, &o.CAID)
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of the CA")
	fs.StringVar(&o.TokenFile, "token-file", "", "file holding the service-account token")
	fs.StringVar(&o.TrustBundleFile, "trust-bundle-file", "", "PEM trust anchors")
	fs.StringVar(&o.OutDir, "out-dir", "", "write svid.pem, svid.key and bundle.pem as new files in this existing folder")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "give up after this long")
	fs.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	return cmd
}
