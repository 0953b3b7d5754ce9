package inspect

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// Options are inspect's flags, and what tests replace.
type Options struct {
	// BundleFile holds PEM anchors to verify the chain against; empty
	// verifies nothing.
	BundleFile string
	// Output is "table" or "json".
	Output string

	// Stdin is read for the file "-"; nil reads nothing.
	Stdin io.Reader
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Validate refuses flags that cannot work, as usage errors.
func (o *Options) Validate() error {
	if o.Output != "table" && o.Output != "json" {
		return cli.Usagef("-o %q: use table or json", o.Output)
	}
	return nil
}

// Report is what inspect prints.
type Report struct {
	// Format is "pem" or "der", as the input was.
	Format       string            `json:"format"`
	Certificates []certinfo.Report `json:"certificates"`
	// Keys are the private keys in the file: their type, never their
	// bytes, and the certificate each belongs to.
	Keys []KeyReport `json:"private_keys,omitempty"`
	// Verified is set with --bundle: whether the first certificate, with
	// the others as intermediates, chains to an anchor of the bundle.
	Verified *bool  `json:"verified,omitempty"`
	Anchor   string `json:"anchor,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// KeyReport is a private key found beside the certificates.
type KeyReport struct {
	Block int    `json:"pem_block"`
	Type  string `json:"type"`
	// Matches is the index of the certificate the key belongs to; nil
	// when it belongs to none of them.
	Matches *int `json:"matches_certificate"`
}

// Run inspects file ("-" for Stdin) and prints the report; a chain that
// does not verify is an error, after the report.
func Run(_ context.Context, o *Options, file string, out io.Writer) error {
	var data []byte
	var err error
	if file == "-" {
		stdin := o.Stdin
		if stdin == nil {
			stdin = strings.NewReader("")
		}
		data, err = io.ReadAll(io.LimitReader(stdin, bundle.MaxSize))
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	contents, err := certinfo.Read(data)
	if err != nil {
		name := file
		if file == "-" {
			name = "standard input"
		}
		return fmt.Errorf("inspect: %s: %w", name, err)
	}
	certs := contents.Certs
	now := clock.RealClock{}.Now()
	if o.Clock != nil {
		now = o.Clock.Now()
	}
	rep := Report{Format: "pem"}
	if contents.DER {
		rep.Format = "der"
	}
	for _, c := range certs {
		rep.Certificates = append(rep.Certificates, certinfo.Describe(c, now))
	}
	var problem error
	for _, k := range contents.Keys {
		kr := KeyReport{Block: k.Block, Type: k.Type}
		if i := k.Matches(certs); i >= 0 {
			kr.Matches = &i
		} else if problem == nil {
			problem = fmt.Errorf("the private key in block %d (%s) matches none of the certificates", k.Block, k.Type)
		}
		rep.Keys = append(rep.Keys, kr)
	}
	if o.BundleFile != "" {
		anchorsPEM, err := os.ReadFile(o.BundleFile)
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		anchors, err := bundle.Parse(anchorsPEM)
		if err != nil {
			return fmt.Errorf("inspect: --bundle %s: %w", o.BundleFile, err)
		}
		anchor, err := verifyAgainst(certs, anchors, now)
		ok := err == nil
		rep.Verified = &ok
		if ok {
			rep.Anchor = anchor.Subject.String()
		} else {
			rep.Problem = err.Error()
			problem = fmt.Errorf("the chain does not verify: %w", err)
		}
	}
	if o.Output == "json" {
		if err := output.JSON(out, rep); err != nil {
			return err
		}
	} else if err := printTable(out, o, &rep); err != nil {
		return err
	}
	if problem != nil {
		return fmt.Errorf("inspect: %w", problem)
	}
	return nil
}

func printTable(out io.Writer, o *Options, rep *Report) error {
	style := cli.StyleFor(out)
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
		if c.IsCA {
			fmt.Fprintf(tw, "  CA\ttrue, path length %s\n", c.PathLen)
		} else {
			fmt.Fprintf(tw, "  CA\tfalse\n")
		}
		if len(c.KeyUsage) > 0 {
			fmt.Fprintf(tw, "  Key usage\t%s\n", strings.Join(c.KeyUsage, ", "))
		}
		if len(c.ExtKeyUsage) > 0 {
			fmt.Fprintf(tw, "  Ext key usage\t%s\n", strings.Join(c.ExtKeyUsage, ", "))
		}
		fmt.Fprintf(tw, "  SHA-256\t%s\n", c.SHA256)
	}
	for _, k := range rep.Keys {
		fmt.Fprintln(tw)
		match := style.Bad("matches none of the certificates")
		if k.Matches != nil {
			match = style.Good(fmt.Sprintf("matches certificate %d", *k.Matches))
		}
		fmt.Fprintf(tw, "Private key\t%s (PEM block %d), %s\n", k.Type, k.Block, match)
	}
	if rep.Verified != nil {
		fmt.Fprintln(tw)
		if *rep.Verified {
			fmt.Fprintf(tw, "Chain\t%s\n", style.Good(fmt.Sprintf("verifies against %s (anchor %s)", o.BundleFile, rep.Anchor)))
		} else {
			fmt.Fprintf(tw, "Chain\t%s\n", style.Bad(fmt.Sprintf("DOES NOT VERIFY against %s: %s", o.BundleFile, rep.Problem)))
		}
	}
	return tw.Flush()
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
