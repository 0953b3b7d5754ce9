package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/rotation"
)

type verifyOptions struct {
	as                string
	certFile, keyFile string
	ca, caID          string
	audience          string
	kubeconfig        string
	namespace         string
	bundleName        string
	bundleFile        string
	trustDomain       string
	expectID          string
	timeout           time.Duration
	output            string
}

func (o *verifyOptions) validate() error {
	switch {
	case (o.as == "") == (o.certFile == ""):
		return cli.Usagef("choose who to connect as: --as NAMESPACE/SERVICE_ACCOUNT, or --cert and --key")
	case (o.certFile == "") != (o.keyFile == ""):
		return cli.Usagef("--cert and --key go together")
	case o.as != "" && !strings.Contains(o.as, "/"):
		return cli.Usagef("--as %q: want NAMESPACE/SERVICE_ACCOUNT", o.as)
	case o.output != "table" && o.output != "json":
		return cli.Usagef("-o %q: use table or json", o.output)
	}
	if _, err := spiffeid.TrustDomainFromString(o.trustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
	}
	if o.expectID != "" {
		if _, err := spiffeid.FromString(o.expectID); err != nil {
			return cli.Usagef("--expect-id %q: %v", o.expectID, err)
		}
	}
	return nil
}

func newVerifyCommand() *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify ADDR",
		Short: "Make a real mTLS handshake to a meshed endpoint and report who answered",
		Long: strings.TrimSpace(`
verify connects to ADDR (an inbound port of meshid-proxy, or any SPIFFE mTLS
server) as a chosen identity and reports the server's SPIFFE ID, chain, expiry,
the anchor that validated it, the TLS version and cipher, and whether the
server accepted us: a policy refusal is reported as such, not as a network
error.

Connect as a service account with --as NAMESPACE/NAME (verify gets a token
with the TokenRequest API and a certificate from meshid-ca at --ca, as a
workload would), or with a certificate you have (--cert, --key). The trust
bundle is --trust-bundle-file, or else the cluster's ConfigMap.

Exit 1 when the server's certificate does not verify, the server refused us,
or --expect-id does not match.

` + cli.ExitCodes),
		Example: `  meshid verify 10.0.3.7:8443 --as shop/web --ca 127.0.0.1:8443 --expect-id spiffe://cluster.local/ns/shop/sa/db
  meshid verify db.shop.svc:8443 --cert svid.pem --key svid.key --trust-bundle-file ca-bundle.crt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef("verify takes one ADDR (host:port) (see %s --help)", cmd.CommandPath())
			}
			return o.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.as, "as", "", "connect as this service account: NAMESPACE/NAME")
	fs.StringVar(&o.certFile, "cert", "", "connect with this PEM certificate chain instead")
	fs.StringVar(&o.keyFile, "key", "", "the private key of --cert")
	fs.StringVar(&o.ca, "ca", "meshid-ca.meshid.svc:8443", "meshid-ca address, for --as")
	cli.AddCAIDFlag(fs, &o.caID)
	fs.StringVar(&o.audience, "audience", "identity.meshid.dev", "token audience the CA expects, for --as")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVarP(&o.namespace, "namespace", "n", "meshid", "namespace of the trust-bundle ConfigMap")
	fs.StringVar(&o.bundleName, "trust-bundle", "meshid-trust-bundle", "trust-bundle ConfigMap, when no --trust-bundle-file")
	fs.StringVar(&o.bundleFile, "trust-bundle-file", "", "PEM trust anchors")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain")
	fs.StringVar(&o.expectID, "expect-id", "", "exit 1 unless the server presents this SPIFFE ID")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "give up after this long")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

type verifyReport struct {
	Address     string       `json:"address"`
	As          string       `json:"as"`
	PeerID      string       `json:"peer_spiffe_id,omitempty"`
	Chain       []certReport `json:"peer_chain,omitempty"`
	Anchor      string       `json:"anchor,omitempty"`
	TLSVersion  string       `json:"tls_version,omitempty"`
	Cipher      string       `json:"cipher_suite,omitempty"`
	PeerTrusted bool         `json:"peer_trusted"`
	Accepted    bool         `json:"accepted_by_server"`
	Problems    []string     `json:"problems,omitempty"`
}

func runVerify(ctx context.Context, o *verifyOptions, addr string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString(o.trustDomain)
	anchors, err := verifyBundle(ctx, o)
	if err != nil {
		return err
	}
	cert, as, err := verifyIdentity(ctx, o, td, anchors)
	if err != nil {
		return err
	}
	rep := verifyReport{Address: addr, As: as}

	var peerErr error
	cfg := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		InsecureSkipVerify:   true, // verified below against the SPIFFE bundle, and reported
		VerifyConnection: func(cs tls.ConnectionState) error {
			now := time.Now()
			for _, c := range cs.PeerCertificates {
				rep.Chain = append(rep.Chain, describe(c, now))
			}
			id, chains, err := x509svid.Verify(cs.PeerCertificates, anchors.X509Bundle(td))
			if err != nil {
				peerErr = err
				return nil // finish the handshake to report everything
			}
			rep.PeerID, rep.PeerTrusted = id.String(), true
			rep.Anchor = chains[0][len(chains[0])-1].Subject.String()
			return nil
		},
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("verify: connect to %s: %w", addr, err)
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		rep.Problems = append(rep.Problems, "handshake failed: "+refusalText(err))
	} else {
		cs := conn.ConnectionState()
		rep.TLSVersion, rep.Cipher = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite)
		if peerErr != nil {
			rep.Problems = append(rep.Problems, "the server's certificate does not verify against the trust bundle: "+peerErr.Error())
		}
		// In TLS 1.3 the server judges our certificate after the client's
		// handshake is done: its verdict is the first thing we read.
		_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		_, rerr := conn.Read(make([]byte, 1))
		var ne net.Error
		switch {
		case rerr == nil, errors.As(rerr, &ne) && ne.Timeout():
			rep.Accepted = true
		case errors.Is(rerr, io.EOF):
			rep.Accepted = true // it took us and closed: not a refusal of our identity
		default:
			rep.Problems = append(rep.Problems, "the server refused our certificate: "+refusalText(rerr))
		}
	}
	if o.expectID != "" && rep.PeerID != o.expectID {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the server is %q, expected %s", rep.PeerID, o.expectID))
	}
	if err := printVerify(out, o, &rep); err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		return &cli.SilentError{Err: errors.New(strings.Join(rep.Problems, "; "))}
	}
	return nil
}

// refusalText turns TLS alerts into what they mean for a mesh.
func refusalText(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "bad certificate"):
		return "TLS alert bad certificate: the server's policy denies this identity, or does not trust its anchor (" + msg + ")"
	case strings.Contains(msg, "certificate required"):
		return "TLS alert certificate required: the server wants a client certificate (" + msg + ")"
	case strings.Contains(msg, "protocol version"):
		return "TLS version refused: meshed peers speak TLS 1.3 only (" + msg + ")"
	}
	return msg
}

func verifyBundle(ctx context.Context, o *verifyOptions) (*bundle.Bundle, error) {
	var data []byte
	if o.bundleFile != "" {
		var err error
		if data, err = os.ReadFile(o.bundleFile); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	} else {
		client, err := kube.KubeClient(o.kubeconfig, "meshid-verify")
		if err != nil {
			return nil, err
		}
		cm, err := client.CoreV1().ConfigMaps(o.namespace).Get(ctx, o.bundleName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("verify: trust bundle ConfigMap %s/%s: %w (or pass --trust-bundle-file)", o.namespace, o.bundleName, err)
		}
		data = []byte(cm.Data["ca-bundle.crt"])
	}
	b, err := bundle.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return b, nil
}

// verifyIdentity returns the certificate to connect with and who it names.
func verifyIdentity(ctx context.Context, o *verifyOptions, td spiffeid.TrustDomain, anchors *bundle.Bundle) (*tls.Certificate, string, error) {
	if o.certFile != "" {
		c, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, "", fmt.Errorf("verify: %w", err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, "", fmt.Errorf("verify: %w", err)
		}
		as := leaf.Subject.String()
		if id, err := x509svid.IDFromCert(leaf); err == nil {
			as = id.String()
		}
		return &c, as, nil
	}
	ns, name, _ := strings.Cut(o.as, "/")
	client, err := kube.KubeClient(o.kubeconfig, "meshid-verify")
	if err != nil {
		return nil, "", err
	}
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{o.audience}, ExpirationSeconds: ptr.To[int64](600),
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("verify: token for %s: %w", o.as, err)
	}
	caID, err := cli.CAID(o.caID, td)
	if err != nil {
		return nil, "", err
	}
	conn, err := rotation.DialCA(o.ca, anchors.X509Bundle(td), caID)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	got, err := rotation.Certify(ctx, identityv1.NewIdentityClient(conn), tr.Status.Token)
	if err != nil {
		return nil, "", fmt.Errorf("verify: certificate for %s: %w", o.as, err)
	}
	return got.Certificate(), got.SVID.ID.String(), nil
}

func printVerify(out io.Writer, o *verifyOptions, rep *verifyReport) error {
	if o.output == "json" {
		return writeJSON(out, rep)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Address\t%s\n", rep.Address)
	fmt.Fprintf(tw, "As\t%s\n", rep.As)
	if rep.TLSVersion != "" {
		fmt.Fprintf(tw, "TLS\t%s, %s\n", rep.TLSVersion, rep.Cipher)
	}
	peer := rep.PeerID
	if !rep.PeerTrusted {
		peer = "NOT VERIFIED"
	}
	fmt.Fprintf(tw, "Server\t%s\n", peer)
	for i, c := range rep.Chain {
		name := c.Subject
		if c.SPIFFEID != "" {
			name = c.SPIFFEID
		}
		fmt.Fprintf(tw, "Chain[%d]\t%s (expires in %s)\n", i, name, c.TimeLeft)
	}
	if rep.Anchor != "" {
		fmt.Fprintf(tw, "Anchor\t%s\n", rep.Anchor)
	}
	accepted := "yes"
	if !rep.Accepted {
		accepted = "NO"
	}
	fmt.Fprintf(tw, "Accepted us\t%s\n", accepted)
	for _, p := range rep.Problems {
		fmt.Fprintf(tw, "Problem\t%s\n", p)
	}
	return tw.Flush()
}
