package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/rotation"
)

type certifyOptions struct {
	ca              string
	caID            string
	trustDomain     string
	tokenFile       string
	trustBundleFile string
	outDir          string
	timeout         time.Duration
	output          string
}

func (o *certifyOptions) validate() error {
	switch {
	case o.ca == "":
		return cli.Usagef("--ca is required: the address of meshid-ca, e.g. meshid-ca.meshid.svc:8443")
	case o.tokenFile == "":
		return cli.Usagef("--token-file is required: a service-account token for the CA's audience (kubectl create token SA --audience identity.meshid.dev)")
	case o.trustBundleFile == "":
		return cli.Usagef("--trust-bundle-file is required: the PEM trust anchors, to verify the CA")
	case o.output != "table" && o.output != "json":
		return cli.Usagef("-o %q: use table or json", o.output)
	}
	if _, err := o.serverID(); err != nil {
		return err
	}
	return nil
}

func (o *certifyOptions) serverID() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return spiffeid.ID{}, cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
	}
	return cli.CAID(o.caID, td)
}

func newCertifyCommand(run func(context.Context, *certifyOptions, io.Writer) error) *cobra.Command {
	o := &certifyOptions{}
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
		PreRunE: func(*cobra.Command, []string) error { return o.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.ca, "ca", "", "meshid-ca gRPC address (host:port)")
	cli.AddCAIDFlag(fs, &o.caID)
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain of the CA")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the service-account token")
	fs.StringVar(&o.trustBundleFile, "trust-bundle-file", "", "PEM trust anchors")
	fs.StringVar(&o.outDir, "out-dir", "", "write svid.pem, svid.key and bundle.pem here")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

// certifyReport is what certify prints.
type certifyReport struct {
	SPIFFEID   string       `json:"spiffe_id"`
	Serial     string       `json:"serial"`
	NotBefore  time.Time    `json:"not_before"`
	NotAfter   time.Time    `json:"not_after"`
	RenewAfter time.Time    `json:"renew_after"`
	Chain      []certReport `json:"chain"`
	Anchor     string       `json:"anchor"`
	Files      []string     `json:"files,omitempty"`
}

func runCertify(ctx context.Context, o *certifyOptions, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	tokenData, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return fmt.Errorf("certify: %w", err)
	}
	bundleData, err := os.ReadFile(o.trustBundleFile)
	if err != nil {
		return fmt.Errorf("certify: %w", err)
	}
	anchors, err := bundle.Parse(bundleData)
	if err != nil {
		return fmt.Errorf("certify: %s: %w", o.trustBundleFile, err)
	}
	caID, _ := o.serverID()
	conn, err := rotation.DialCA(o.ca, anchors.X509Bundle(caID.TrustDomain()), caID)
	if err != nil {
		return err
	}
	defer conn.Close()
	got, err := rotation.Certify(ctx, identityv1.NewIdentityClient(conn), strings.TrimSpace(string(tokenData)))
	if err != nil {
		return err
	}
	chains, err := verifyChain(got.SVID, anchors)
	if err != nil {
		return err
	}
	rep := certifyReport{
		SPIFFEID:   got.SVID.ID.String(),
		Serial:     got.SVID.Certificates[0].SerialNumber.Text(16),
		NotBefore:  got.SVID.Certificates[0].NotBefore,
		NotAfter:   got.SVID.Certificates[0].NotAfter,
		RenewAfter: got.RenewAfter,
		Chain:      chains,
		Anchor:     chains[len(chains)-1].Subject,
	}
	if o.outDir != "" {
		if rep.Files, err = writeSVID(o.outDir, got.SVID, anchors); err != nil {
			return err
		}
	}
	if o.output == "json" {
		return writeJSON(out, rep)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SPIFFE ID\t%s\n", rep.SPIFFEID)
	fmt.Fprintf(tw, "Serial\t%s\n", rep.Serial)
	fmt.Fprintf(tw, "Valid\t%s to %s (%s)\n", rep.NotBefore.UTC().Format(time.RFC3339), rep.NotAfter.UTC().Format(time.RFC3339), time.Until(rep.NotAfter).Round(time.Second))
	fmt.Fprintf(tw, "Renew after\t%s\n", rep.RenewAfter.UTC().Format(time.RFC3339))
	for i, c := range rep.Chain {
		name := c.Subject
		if c.SPIFFEID != "" {
			name = c.SPIFFEID
		}
		fmt.Fprintf(tw, "Chain[%d]\t%s (expires %s, in %s)\n", i, name, c.NotAfter.UTC().Format(time.RFC3339), c.TimeLeft)
	}
	for _, f := range rep.Files {
		fmt.Fprintf(tw, "Wrote\t%s\n", f)
	}
	return tw.Flush()
}

// verifyChain verifies the SVID against the anchors with go-spiffe and
// describes the chain, leaf first, anchor last.
func verifyChain(svid *x509svid.SVID, anchors *bundle.Bundle) ([]certReport, error) {
	_, chains, err := x509svid.Verify(svid.Certificates, anchors.X509Bundle(svid.ID.TrustDomain()))
	if err != nil {
		return nil, fmt.Errorf("certify: the certificate does not verify against the trust bundle: %w", err)
	}
	now := time.Now()
	var rep []certReport
	for _, c := range chains[0] {
		rep = append(rep, describe(c, now))
	}
	return rep, nil
}

func writeSVID(dir string, svid *x509svid.SVID, anchors *bundle.Bundle) ([]string, error) {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"svid.pem", certPEM, 0o644},
		{"svid.key", keyPEM, 0o600},
		{"bundle.pem", anchors.PEM(), 0o644},
	}
	var written []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFile(p, f.data, f.mode); err != nil {
			return nil, err
		}
		written = append(written, p)
	}
	return written, nil
}

// writeFile replaces p atomically with data at mode; the mode is set before
// any data is written, so a key is never readable by others.
func writeFile(p string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return os.Rename(tmp.Name(), p)
}
