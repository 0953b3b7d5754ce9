package verify

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

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/sidecar"
)

// Options are verify's flags, and what tests replace.
type Options struct {
	// As is NAMESPACE/SERVICE_ACCOUNT to connect as; or else CertFile and
	// KeyFile, a certificate the operator has.
	As                string
	CertFile, KeyFile string
	// CA and CAID are meshid-ca's address and the SPIFFE ID it must
	// present (empty: its default identity), for As; Audience the token
	// audience it expects.
	CA, CAID string
	Audience string
	// Cluster is the kubeconfig file and context; empty means $KUBECONFIG,
	// ~/.kube/config or the pod's configuration.
	Cluster kube.Target
	// Namespace and BundleName name the trust-bundle ConfigMap, read when
	// BundleFile is empty; Namespace is meshid-ca's too, for the hint on
	// how to reach it.
	Namespace, BundleName string
	BundleFile            string
	TrustDomain           string
	// ExpectID, when set, is the SPIFFE ID the server must present.
	ExpectID string
	// Timeout bounds the whole command.
	Timeout time.Duration
	// Output is "table" or "json".
	Output string

	// Connect builds the Kubernetes clients, when needed; nil means
	// kube.NewClients.
	Connect kube.Connect
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

func (o *Options) now() time.Time {
	if o.Clock == nil {
		return clock.RealClock{}.Now()
	}
	return o.Clock.Now()
}

// Validate refuses flags that cannot work, as usage errors.
func (o *Options) Validate() error {
	switch {
	case (o.As == "") == (o.CertFile == ""):
		return cli.Usagef("choose who to connect as: --as NAMESPACE/SERVICE_ACCOUNT, or --cert and --key")
	case (o.CertFile == "") != (o.KeyFile == ""):
		return cli.Usagef("--cert and --key go together")
	case o.As != "" && !strings.Contains(o.As, "/"):
		return cli.Usagef("--as %q: want NAMESPACE/SERVICE_ACCOUNT", o.As)
	case o.Output != "table" && o.Output != "json":
		return cli.Usagef("-o %q: use table or json", o.Output)
	}
	if _, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	if o.ExpectID != "" {
		if _, err := spiffeid.FromString(o.ExpectID); err != nil {
			return cli.Usagef("--expect-id %q: %v", o.ExpectID, err)
		}
	}
	return nil
}

// Report is what verify prints.
type Report struct {
	Address     string            `json:"address"`
	As          string            `json:"as"`
	PeerID      string            `json:"peer_spiffe_id,omitempty"`
	Chain       []certinfo.Report `json:"peer_chain,omitempty"`
	Anchor      string            `json:"anchor,omitempty"`
	TLSVersion  string            `json:"tls_version,omitempty"`
	Cipher      string            `json:"cipher_suite,omitempty"`
	PeerTrusted bool              `json:"peer_trusted"`
	// ClientCertRequested says the server asked for our certificate:
	// false means plain TLS, not mTLS.
	ClientCertRequested bool `json:"client_cert_requested"`
	// ALPN is the protocol the server chose: sidecar.ALPN means a
	// transparent meshid-proxy took us for a meshed peer (its inbound
	// listener requires it); an explicit listener chooses none.
	ALPN     string   `json:"alpn,omitempty"`
	Accepted bool     `json:"accepted_by_server"`
	Problems []string `json:"problems,omitempty"`
}

// run is one verify: the clients are built at most once, and only when
// the bundle or the identity comes from the cluster.
type run struct {
	o       *Options
	clients *kube.Clients
}

func (r *run) kube() (*kube.Clients, error) {
	if r.clients != nil {
		return r.clients, nil
	}
	connect := r.o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	c, err := connect(r.o.Cluster, "meshid-verify")
	if err != nil {
		return nil, err
	}
	r.clients = c
	return c, nil
}

// Run connects to addr and prints the report; any problem found is an
// error that prints nothing more (the report said it).
func Run(ctx context.Context, o *Options, addr string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r := &run{o: o}
	td := spiffeid.RequireTrustDomainFromString(o.TrustDomain)
	anchors, err := r.bundle(ctx)
	if err != nil {
		return err
	}
	cert, as, err := r.identity(ctx, td, anchors)
	if err != nil {
		return err
	}
	rep := Report{Address: addr, As: as}

	var peerErr error
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		Time:       o.now,
		// A transparent pod's proxy sniffs for it: without it, the
		// ClientHello would be taken for the app's own TLS.
		NextProtos: []string{sidecar.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			rep.ClientCertRequested = true
			return cert, nil
		},
		InsecureSkipVerify: true, // verified below against the SPIFFE bundle, and reported
		VerifyConnection: func(cs tls.ConnectionState) error {
			now := o.now()
			for _, c := range cs.PeerCertificates {
				rep.Chain = append(rep.Chain, certinfo.Describe(c, now))
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
		rep.TLSVersion, rep.Cipher, rep.ALPN = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.NegotiatedProtocol
		if peerErr != nil {
			rep.Problems = append(rep.Problems, "the server's certificate does not verify against the trust bundle: "+peerErr.Error())
		}
		// In TLS 1.3 the server judges our certificate after the client's
		// handshake is done: its verdict is the first thing we read.
		_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		_, rerr := conn.Read(make([]byte, 1))
		var ne net.Error
		switch {
		case !rep.ClientCertRequested:
			rep.Problems = append(rep.Problems, "the server did not ask for a client certificate: this is TLS, not mTLS (is ADDR the proxy's inbound port?)")
		case rerr == nil, errors.As(rerr, &ne) && ne.Timeout():
			rep.Accepted = true
		case errors.Is(rerr, io.EOF):
			rep.Accepted = true // it took us and closed: not a refusal of our identity
		default:
			rep.Problems = append(rep.Problems, "the server refused our certificate: "+refusalText(rerr))
		}
	}
	if o.ExpectID != "" && rep.PeerID != o.ExpectID {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the server is %q, expected %s", rep.PeerID, o.ExpectID))
	}
	if err := printReport(out, o, &rep); err != nil {
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

// bundle reads the anchors from BundleFile, or else the cluster's ConfigMap.
func (r *run) bundle(ctx context.Context) (*bundle.Bundle, error) {
	o := r.o
	var data []byte
	if o.BundleFile != "" {
		var err error
		if data, err = os.ReadFile(o.BundleFile); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	} else {
		c, err := r.kube()
		if err != nil {
			return nil, err
		}
		cm, err := c.Kube.CoreV1().ConfigMaps(o.Namespace).Get(ctx, o.BundleName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("verify: trust bundle ConfigMap %s/%s: %w (or pass --trust-bundle-file)", o.Namespace, o.BundleName, err)
		}
		data = []byte(cm.Data[bundle.Key])
	}
	b, err := bundle.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return b, nil
}

// identity returns the certificate to connect with and who it names.
func (r *run) identity(ctx context.Context, td spiffeid.TrustDomain, anchors *bundle.Bundle) (*tls.Certificate, string, error) {
	o := r.o
	if o.CertFile != "" {
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("verify: --cert %s, --key %s: %w; give a PEM certificate and its PEM private key", o.CertFile, o.KeyFile, err)
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
	ns, name, _ := strings.Cut(o.As, "/")
	c, err := r.kube()
	if err != nil {
		return nil, "", err
	}
	tr, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{o.Audience}, ExpirationSeconds: ptr.To[int64](600),
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("verify: token for %s: %w", o.As, err)
	}
	caID, err := cli.CAID(o.CAID, td)
	if err != nil {
		return nil, "", err
	}
	conn, err := rotation.DialCA(o.CA, anchors.X509Bundle(td), caID)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	got, err := rotation.Certify(ctx, identityv1.NewIdentityClient(conn), tr.Status.Token, r.o.now())
	if err != nil {
		if cli.CAUnreachable(err) {
			return nil, "", fmt.Errorf("verify: %s to get a certificate for %s: %w. "+
				"The default is the in-cluster address: from a workstation, run kubectl -n %s port-forward svc/meshid-ca 8443 and pass --ca 127.0.0.1:8443, or pass --ca ADDR of a CA you can reach, or connect with --cert and --key",
				cli.CannotReachCA(o.CA), o.As, err, o.Namespace)
		}
		return nil, "", fmt.Errorf("verify: certificate for %s: %w", o.As, err)
	}
	return got.Certificate(), got.SVID.ID.String(), nil
}

func printReport(out io.Writer, o *Options, rep *Report) error {
	if o.Output == "json" {
		return output.JSON(out, rep)
	}
	style := cli.StyleFor(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Address\t%s\n", rep.Address)
	fmt.Fprintf(tw, "As\t%s\n", rep.As)
	if rep.TLSVersion != "" {
		fmt.Fprintf(tw, "TLS\t%s, %s\n", rep.TLSVersion, rep.Cipher)
		alpn := "none chosen: an explicit meshid-proxy listener, or not a meshid-proxy"
		if rep.ALPN == sidecar.ALPN {
			alpn = sidecar.ALPN + ": a transparent meshid-proxy took us for a meshed peer"
		} else if rep.ALPN != "" {
			alpn = rep.ALPN + ": not meshid's (the app's own TLS?)"
		}
		fmt.Fprintf(tw, "ALPN\t%s\n", alpn)
	}
	peer := style.Good(rep.PeerID)
	if !rep.PeerTrusted {
		peer = style.Bad("NOT VERIFIED")
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
	accepted := style.Good("yes")
	switch {
	case rep.TLSVersion != "" && !rep.ClientCertRequested:
		accepted = style.Bad("not asked: the server did not request a client certificate (not mTLS)")
	case !rep.Accepted:
		accepted = style.Bad("NO")
	}
	fmt.Fprintf(tw, "Accepted us\t%s\n", accepted)
	for _, p := range rep.Problems {
		fmt.Fprintf(tw, "Problem\t%s\n", p)
	}
	return tw.Flush()
}
