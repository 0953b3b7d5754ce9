package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
)

type inspectOptions struct {
	bundleFile string
	output     string
	now        func() time.Time
}

type inspectReport struct {
	Certificates []certReport `json:"certificates"`
	// Verified is set with --bundle: whether the first certificate, with
	// the others as intermediates, chains to an anchor of the bundle.
	Verified *bool  `json:"verified,omitempty"`
	Anchor   string `json:"anchor,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

func newInspectCommand(stdin io.Reader) *cobra.Command {
	o := &inspectOptions{now: time.Now}
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
			if o.output != "table" && o.output != "json" {
				return cli.Usagef("-o %q: use table or json", o.output)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInspect(cmd.Context(), o, args[0], stdin, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.bundleFile, "bundle", "", "PEM trust anchors to verify the chain against")
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

func runInspect(_ context.Context, o *inspectOptions, file string, stdin io.Reader, out io.Writer) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, bundle.MaxSize))
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return fmt.Errorf("inspect: %s: %w", file, err)
	}
	now := o.now()
	rep := inspectReport{}
	for _, c := range certs {
		rep.Certificates = append(rep.Certificates, describe(c, now))
	}
	var problem error
	if o.bundleFile != "" {
		anchorsPEM, err := os.ReadFile(o.bundleFile)
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		anchors, err := bundle.Parse(anchorsPEM)
		if err != nil {
			return fmt.Errorf("inspect: --bundle %s: %w", o.bundleFile, err)
		}
		anchor, err := verifyAgainst(certs, anchors, now)
		ok := err == nil
		rep.Verified = &ok
		if ok {
			rep.Anchor = anchor.Subject.String()
		} else {
			rep.Problem, problem = err.Error(), err
		}
	}
	if o.output == "json" {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for i, c := range rep.Certificates {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			fmt.Fprintf(tw, "Certificate %d\t%s\n", i, c.Subject)
			if c.SPIFFEID != "" {
				fmt.Fprintf(tw, "  SPIFFE ID\t%s\n", c.SPIFFEID)
			}
			if len(c.DNSNames) > 0 {
				fmt.Fprintf(tw, "  DNS names\t%s\n", strings.Join(c.DNSNames, ", "))
			}
			fmt.Fprintf(tw, "  Issuer\t%s\n", c.Issuer)
			fmt.Fprintf(tw, "  Serial\t%s\n", c.Serial)
			fmt.Fprintf(tw, "  Valid\t%s to %s (%s)\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), c.TimeLeft)
			fmt.Fprintf(tw, "  Key\t%s\n", c.KeyType)
			fmt.Fprintf(tw, "  CA\t%v\n", c.IsCA)
			fmt.Fprintf(tw, "  SHA-256\t%s\n", c.SHA256)
		}
		if rep.Verified != nil {
			fmt.Fprintln(tw)
			if *rep.Verified {
				fmt.Fprintf(tw, "Chain\tverifies against %s (anchor %s)\n", o.bundleFile, rep.Anchor)
			} else {
				fmt.Fprintf(tw, "Chain\tDOES NOT VERIFY against %s: %s\n", o.bundleFile, rep.Problem)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if problem != nil {
		return fmt.Errorf("inspect: the chain does not verify: %w", problem)
	}
	return nil
}

// parseCertificates reads every CERTIFICATE block; other blocks are
// refused, as keys have no business being inspected by accident.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q; inspect reads certificates only", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// verifyAgainst verifies certs[0] with certs[1:] as intermediates against
// the anchors at now, as a SPIFFE X.509-SVID when it carries a SPIFFE ID,
// and returns the anchor that validated it.
func verifyAgainst(certs []*x509.Certificate, anchors *bundle.Bundle, now time.Time) (*x509.Certificate, error) {
	leaf := certs[0]
	if id, err := x509svid.IDFromCert(leaf); err == nil && !leaf.IsCA {
		_, chains, err := x509svid.Verify(certs, anchors.X509Bundle(id.TrustDomain()), x509svid.WithTime(now))
		if err != nil {
			return nil, err
		}
		return chains[0][len(chains[0])-1], nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if anchors.Contains(leaf) {
		return leaf, nil
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: anchors.Pool(), Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, err
	}
	return chains[0][len(chains[0])-1], nil
}
