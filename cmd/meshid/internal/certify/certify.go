package certify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/rotation"
)

// Options are certify's flags.
type Options struct {
	// CA is meshid-ca's gRPC address (host:port). Required.
	CA string
	// CAID is the SPIFFE ID the CA must present; empty means meshid-ca's
	// default identity in TrustDomain.
	CAID        string
	TrustDomain string
	// TokenFile holds the service-account token. Required.
	TokenFile string
	// TrustBundleFile holds the PEM anchors, to verify the CA. Required.
	TrustBundleFile string
	// OutDir, when set, receives svid.pem, svid.key (mode 0600) and
	// bundle.pem: new files, never written over (the folder is created
	// when missing).
	OutDir string
	// Timeout bounds the whole command.
	Timeout time.Duration
	// Output is "table" or "json".
	Output string
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Validate refuses flags that cannot work, as usage errors.
func (o *Options) Validate() error {
	switch {
	case o.CA == "":
		return cli.Usagef("--ca is required: the address of meshid-ca, e.g. meshid-ca.meshid.svc:8443")
	case o.TokenFile == "":
		return cli.Usagef("--token-file is required: a service-account token for the CA's audience (kubectl create token SA --audience %s)", identity.DefaultAudience)
	case o.TrustBundleFile == "":
		return cli.Usagef("--trust-bundle-file is required: the PEM trust anchors, to verify the CA")
	case o.Output != "table" && o.Output != "json":
		return cli.Usagef("-o %q: use table or json", o.Output)
	}
	if _, err := o.serverID(); err != nil {
		return err
	}
	return nil
}

func (o *Options) serverID() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	return cli.CAID(o.CAID, td)
}

// Report is what certify prints.
type Report struct {
	SPIFFEID   string            `json:"spiffe_id"`
	Serial     string            `json:"serial"`
	NotBefore  time.Time         `json:"not_before"`
	NotAfter   time.Time         `json:"not_after"`
	RenewAfter time.Time         `json:"renew_after"`
	Chain      []certinfo.Report `json:"chain"`
	Anchor     string            `json:"anchor"`
	Files      []string          `json:"files,omitempty"`
}

// Run gets a certificate from the CA and prints it.
func Run(ctx context.Context, o *Options, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var clk clock.PassiveClock = clock.RealClock{}
	if o.Clock != nil {
		clk = o.Clock
	}
	if o.OutDir != "" {
		// Before a key is generated: a folder that is not there or not
		// writable, and files already there, are refused.
		if err := checkOutDir(o.OutDir); err != nil {
			return err
		}
		for _, f := range svidFiles {
			p := filepath.Join(o.OutDir, f.name)
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("certify: --out-dir %s: %s %w; it is never overwritten: choose another --out-dir, or move the files away", o.OutDir, p, output.ErrExists)
			}
		}
	}
	tokenData, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return fmt.Errorf("certify: %w", err)
	}
	bundleData, err := os.ReadFile(o.TrustBundleFile)
	if err != nil {
		return fmt.Errorf("certify: %w", err)
	}
	anchors, err := bundle.Parse(bundleData)
	if err != nil {
		return fmt.Errorf("certify: %s: %w", o.TrustBundleFile, err)
	}
	caID, err := o.serverID()
	if err != nil {
		return err
	}
	conn, err := rotation.DialCA(o.CA, anchors.X509Bundle(caID.TrustDomain()), caID)
	if err != nil {
		return err
	}
	defer conn.Close()
	got, err := rotation.Certify(ctx, identityv1.NewIdentityClient(conn), strings.TrimSpace(string(tokenData)), clk.Now())
	if cli.CAUnreachable(err) {
		return fmt.Errorf("certify: %s: %w. Pass --ca ADDR of a CA you can reach: from a workstation, run kubectl -n NAMESPACE port-forward svc/meshid-ca 8443 and pass --ca 127.0.0.1:8443", cli.CannotReachCA(o.CA), err)
	}
	if err != nil {
		return err
	}
	chains, err := verifyChain(got.SVID, anchors, clk.Now())
	if err != nil {
		return err
	}
	rep := Report{
		SPIFFEID:   got.SVID.ID.String(),
		Serial:     certinfo.Serial(got.SVID.Certificates[0]),
		NotBefore:  got.SVID.Certificates[0].NotBefore,
		NotAfter:   got.SVID.Certificates[0].NotAfter,
		RenewAfter: got.RenewAfter,
		Chain:      chains,
		Anchor:     chains[len(chains)-1].Subject,
	}
	if o.OutDir != "" {
		if rep.Files, err = writeSVID(o.OutDir, got.SVID, anchors); err != nil {
			return err
		}
	}
	if o.Output == "json" {
		return output.JSON(out, rep)
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
func verifyChain(svid *x509svid.SVID, anchors *bundle.Bundle, now time.Time) ([]certinfo.Report, error) {
	_, chains, err := x509svid.Verify(svid.Certificates, anchors.X509Bundle(svid.ID.TrustDomain()), x509svid.WithTime(now))
	if err != nil {
		return nil, fmt.Errorf("certify: the certificate does not verify against the trust bundle: %w", err)
	}
	var rep []certinfo.Report
	for _, c := range chains[0] {
		rep = append(rep, certinfo.Describe(c, now))
	}
	return rep, nil
}

// checkOutDir refuses an --out-dir that is not an existing folder this
// process may write to; it writes nothing.
func checkOutDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--out-dir %s does not exist; create it (mkdir -m 700 %s) or choose another; nothing was written", dir, dir)
	case err != nil:
		return fmt.Errorf("--out-dir %s: %w; nothing was written", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("--out-dir %s is not a folder; choose a folder; nothing was written", dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("--out-dir %s is not writable (%w); choose a folder you may write to; nothing was written", dir, err)
	}
	return nil
}

func writeSVID(dir string, svid *x509svid.SVID, anchors *bundle.Bundle) ([]string, error) {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	data := map[string][]byte{"svid.pem": certPEM, "svid.key": keyPEM, "bundle.pem": anchors.PEM()}
	var written []string
	for _, f := range svidFiles {
		p := filepath.Join(dir, f.name)
		if err := output.CreateFile(p, data[f.name], f.mode); err != nil {
			return nil, fmt.Errorf("certify: %w", err)
		}
		written = append(written, p)
	}
	return written, nil
}

// svidFiles are the files --out-dir receives, and their modes.
var svidFiles = []struct {
	name string
	mode os.FileMode
}{
	{"svid.pem", 0o644},
	{"svid.key", 0o600},
	{"bundle.pem", 0o644},
}
