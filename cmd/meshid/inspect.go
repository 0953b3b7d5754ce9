package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/inspect"
)

func newInspectCommand(stdin io.Reader, run func(ctx context.Context, o *inspect.Options, file string, out io.Writer) error) *cobra.Command {
	o := &inspect.Options{Stdin: stdin}
	cmd := &cobra.Command{
		Use:   "inspect FILE|-",
		Short: "Decode PEM certificates, chains and bundles",
		Long: strings.TrimSpace(`
inspect decodes every PEM certificate in FILE (or standard input with -): its
subject, SPIFFE ID, serial, validity and time left, key type, CA bit and
SHA-256 fingerprint. With --bundle it also verifies the first certificate,
with the others as intermediates, against the anchors in that bundle and names
the anchor that validated it; a chain that does not verify exits 1.`),
		Example: `  meshid inspect svid.pem --bundle ca-bundle.crt
  kubectl -n meshid get secret meshid-issuer -o jsonpath='{.data.tls\.crt}' | base64 -d | meshid inspect -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef("inspect takes one FILE, or - for standard input (see %s --help)", cmd.CommandPath())
			}
			return o.Validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.BundleFile, "bundle", "", "PEM trust anchors to verify the chain against")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
	return cmd
}
