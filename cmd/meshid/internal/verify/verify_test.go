package verify_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/catest"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/cmd/meshid/internal/verify"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/sidecar"
)

var (
	td  = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	db  = spiffeid.RequireFromPath(td, "/ns/shop/sa/db")
	web = spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
)

// server is a meshed endpoint on loopback: it presents id, from iss, asks
// for a client certificate, and refuses it when refuse says so; a client it
// accepts reads one byte.
func server(t *testing.T, iss *issuer.KeyPair, id spiffeid.ID, refuse bool) string {
	return serverAuth(t, iss, id, tls.RequireAnyClientCert, refuse)
}

// serverAuth is server with its own client authentication, choosing one
// of protos by ALPN (none: ALPN is ignored).
func serverAuth(t *testing.T, iss *issuer.KeyPair, id spiffeid.ID, auth tls.ClientAuthType, refuse bool, protos ...string) string {
	chain, key := pkitest.Leaf(t, iss, id, time.Now().Add(-time.Minute), time.Hour)
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientAuth: auth, NextProtos: protos,
		VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
			if refuse {
				return errors.New("policy denies this identity")
			}
			return nil
		},
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("x"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

type fixture struct {
	ca                *catest.CA
	bundleFile        string
	certFile, keyFile string
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{ca: catest.Start(t, catest.Tokens{"web-token": {Namespace: "shop", Name: "web"}})}
	dir := t.TempDir()
	chain, key := pkitest.Leaf(t, f.ca.Issuer, web, time.Now().Add(-time.Minute), time.Hour)
	f.bundleFile = pkitest.File(t, dir, "bundle.pem", f.ca.Anchor.CertPEM())
	f.certFile = pkitest.File(t, dir, "svid.pem", pkitest.PEM(chain...))
	f.keyFile = pkitest.File(t, dir, "svid.key", pkitest.KeyPEM(t, key))
	return f
}

// options are verify's flag defaults, connecting with the fixture's
// certificate and bundle file.
func (f *fixture) options() *verify.Options {
	return &verify.Options{
		CertFile: f.certFile, KeyFile: f.keyFile, BundleFile: f.bundleFile,
		CA: f.ca.Addr, Audience: identity.DefaultAudience, Namespace: "meshid", BundleName: manifest.BundleConfigMap,
		TrustDomain: identity.DefaultTrustDomain, Timeout: 15 * time.Second, Output: "table",
		Connect: func(kube.Target, string) (*kube.Clients, error) {
			return nil, errors.New("verify: this test has no cluster")
		},
	}
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	stranger := pkitest.CA(t, pkitest.CA(t, nil, "stranger", time.Now().Add(-time.Hour), 24*time.Hour), "stranger issuer", time.Now().Add(-time.Hour), 24*time.Hour)
	tests := []struct {
		name     string
		addr     string
		expectID string
		want     []string // table lines (regexps)
		problem  string   // empty: exit 0
	}{
		{
			name: "accepted", addr: server(t, f.ca.Issuer, db, false), expectID: db.String(),
			want: []string{`^Address\s+127\.0\.0\.1:\d+$`, `^As\s+spiffe://cluster.local/ns/shop/sa/web$`, `^TLS\s+TLS 1\.3, TLS_`, `^Server\s+spiffe://cluster.local/ns/shop/sa/db$`,
				`^Chain\[0\]\s+spiffe://cluster.local/ns/shop/sa/db \(expires in \d+m\d+s\)$`, `^Chain\[1\]\s+CN=catest issuer,O=meshid `, `^Anchor\s+CN=catest anchor,O=meshid$`, `^Accepted us\s+yes$`,
				`^ALPN\s+none chosen: an explicit meshid-proxy listener`},
		},
		{
			// A transparent pod's inbound listener takes only a ClientHello
			// offering meshid's ALPN for mTLS, and chooses it.
			name: "a transparent proxy", addr: serverAuth(t, f.ca.Issuer, db, tls.RequireAnyClientCert, false, sidecar.ALPN), expectID: db.String(),
			want: []string{`^ALPN\s+meshid/1: a transparent meshid-proxy took us for a meshed peer$`, `^Accepted us\s+yes$`},
		},
		{
			name: "another identity", addr: server(t, f.ca.Issuer, db, false), expectID: web.String(),
			want:    []string{`^Server\s+spiffe://cluster.local/ns/shop/sa/db$`, `^Problem\s+the server is "spiffe://cluster.local/ns/shop/sa/db", expected spiffe://cluster.local/ns/shop/sa/web$`},
			problem: `the server is "spiffe://cluster.local/ns/shop/sa/db"`,
		},
		{
			name: "server from another anchor", addr: server(t, stranger, db, false),
			want:    []string{`^Server\s+NOT VERIFIED$`, `^Accepted us\s+yes$`, `^Problem\s+the server's certificate does not verify against the trust bundle: `},
			problem: "does not verify against the trust bundle",
		},
		{
			name: "plain TLS", addr: serverAuth(t, f.ca.Issuer, db, tls.NoClientCert, false),
			want:    []string{`^Server\s+spiffe://cluster.local/ns/shop/sa/db$`, `^Accepted us\s+not asked: the server did not request a client certificate \(not mTLS\)$`, `^Problem\s+the server did not ask for a client certificate: this is TLS, not mTLS`},
			problem: "this is TLS, not mTLS",
		},
		{
			name: "server refuses us", addr: server(t, f.ca.Issuer, db, true),
			want:    []string{`^Server\s+spiffe://cluster.local/ns/shop/sa/db$`, `^Accepted us\s+NO$`, `^Problem\s+the server refused our certificate: TLS alert bad certificate: the server's policy denies this identity`},
			problem: "the server refused our certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.options()
			o.ExpectID = tt.expectID
			var out bytes.Buffer
			err := verify.Run(context.Background(), o, tt.addr, &out)
			for _, w := range tt.want {
				if !regexp.MustCompile("(?m)" + w).MatchString(out.String()) {
					t.Errorf("no line matching %s in\n%s", w, out.String())
				}
			}
			if tt.problem == "" {
				if err != nil {
					t.Fatalf("Run = %v", err)
				}
				return
			}
			var silent *cli.SilentError
			if !errors.As(err, &silent) || !strings.Contains(err.Error(), tt.problem) {
				t.Fatalf("Run = %v, want a silent error (exit 1, the report says it) containing %q", err, tt.problem)
			}
		})
	}
}

func TestVerifyJSON(t *testing.T) {
	f := newFixture(t)
	o := f.options()
	o.Output = "json"
	var out bytes.Buffer
	if err := verify.Run(context.Background(), o, server(t, f.ca.Issuer, db, false), &out); err != nil {
		t.Fatal(err)
	}
	var rep verify.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.PeerID != db.String() || !rep.PeerTrusted || !rep.Accepted || !rep.ClientCertRequested || rep.As != web.String() || len(rep.Chain) != 2 || rep.TLSVersion != "TLS 1.3" || len(rep.Problems) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// cluster is a fake API server holding the trust bundle, minting tokens
// as the TokenRequest API would, and counting the clients built.
type cluster struct {
	client   *fake.Clientset
	connects []string
	requests []*authenticationv1.TokenRequest
}

func newCluster(t *testing.T, anchors []byte) *cluster {
	c := &cluster{client: fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshid", Name: manifest.BundleConfigMap}, Data: map[string]string{bundle.Key: string(anchors)},
	})}
	c.client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateActionImpl)
		if ca.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		c.requests = append(c.requests, tr)
		if ca.GetNamespace() != "shop" || ca.Name != "web" {
			return true, nil, errors.New("no such service account")
		}
		tr.Status.Token = "web-token"
		return true, tr, nil
	})
	return c
}

func (c *cluster) connect(t kube.Target, agent string) (*kube.Clients, error) {
	c.connects = append(c.connects, t.Kubeconfig+" "+t.Context+" "+agent)
	return &kube.Clients{Kube: c.client}, nil
}

// TestVerifyAs connects as a service account: the bundle from the
// cluster's ConfigMap, a token from the TokenRequest API, a certificate
// from the CA, with one set of clients.
func TestVerifyAs(t *testing.T) {
	f := newFixture(t)
	c := newCluster(t, f.ca.Anchor.CertPEM())
	o := f.options()
	o.CertFile, o.KeyFile, o.BundleFile, o.As, o.Cluster, o.Connect = "", "", "", "shop/web", kube.Target{Kubeconfig: "/path/kubeconfig", Context: "prod"}, c.connect
	var out bytes.Buffer
	if err := verify.Run(context.Background(), o, server(t, f.ca.Issuer, db, false), &out); err != nil {
		t.Fatalf("Run = %v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^As\s+spiffe://cluster.local/ns/shop/sa/web$`).MatchString(out.String()) {
		t.Fatalf("not connected as shop/web:\n%s", out.String())
	}
	if len(c.connects) != 1 || c.connects[0] != "/path/kubeconfig prod meshid-verify" {
		t.Fatalf("Connect calls %q, want one for /path/kubeconfig, context prod, as meshid-verify", c.connects)
	}
	if len(c.requests) != 1 || len(c.requests[0].Spec.Audiences) != 1 || c.requests[0].Spec.Audiences[0] != identity.DefaultAudience || *c.requests[0].Spec.ExpirationSeconds != 600 {
		t.Fatalf("token requests %+v, want one for the CA's audience, for 10 minutes", c.requests)
	}
}

func TestVerifyFailures(t *testing.T) {
	f := newFixture(t)
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	tests := []struct {
		name    string
		mod     func(*verify.Options, *cluster)
		addr    string
		message string
	}{
		{name: "nothing listens", mod: func(*verify.Options, *cluster) {}, addr: closed, message: "verify: connect to " + closed + ": "},
		{name: "bundle file missing", mod: func(o *verify.Options, _ *cluster) { o.BundleFile = filepath.Join(t.TempDir(), "missing") }, message: "verify: open "},
		{name: "bundle file does not parse", mod: func(o *verify.Options, _ *cluster) {
			o.BundleFile = o.CertFile + ".junk"
			pkitest.File(t, filepath.Dir(o.CertFile), filepath.Base(o.BundleFile), []byte("junk"))
		}, message: "verify: "},
		{name: "certificate file missing", mod: func(o *verify.Options, _ *cluster) { o.CertFile = filepath.Join(t.TempDir(), "missing") }, message: "missing, --key " + f.keyFile + ": open "},
		{name: "certificate as key", mod: func(o *verify.Options, _ *cluster) { o.KeyFile = o.CertFile }, message: "verify: --cert " + f.certFile + ", --key " + f.certFile + ": tls: "},
		{name: "no cluster", mod: func(o *verify.Options, _ *cluster) { o.BundleFile = "" }, message: "this test has no cluster"},
		{
			name: "bundle ConfigMap missing",
			mod: func(o *verify.Options, c *cluster) {
				o.BundleFile, o.BundleName, o.Connect = "", "elsewhere", c.connect
			},
			message: "verify: trust bundle ConfigMap meshid/elsewhere: ",
		},
		{
			name: "token refused",
			mod: func(o *verify.Options, c *cluster) {
				o.CertFile, o.KeyFile, o.As, o.Connect = "", "", "shop/db", c.connect
			},
			message: "verify: token for shop/db: no such service account",
		},
		{
			name: "CA refuses the token",
			mod: func(o *verify.Options, c *cluster) {
				o.CertFile, o.KeyFile, o.As, o.Connect = "", "", "shop/web", c.connect
				o.CA = catest.Start(t, catest.Tokens{}).Addr
			},
			message: "verify: certificate for shop/web: ",
		},
		{
			name: "CA out of reach",
			mod: func(o *verify.Options, c *cluster) {
				o.CertFile, o.KeyFile, o.As, o.Connect, o.CA = "", "", "shop/web", c.connect, closed
			},
			message: "verify: cannot reach meshid-ca at " + closed + " (--ca) to get a certificate for shop/web: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.options()
			c := newCluster(t, f.ca.Anchor.CertPEM())
			tt.mod(o, c)
			addr := tt.addr
			if addr == "" {
				addr = server(t, f.ca.Issuer, db, false)
			}
			var out bytes.Buffer
			err := verify.Run(context.Background(), o, addr, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) || out.Len() != 0 {
				t.Fatalf("Run = %v, printed %q; want an error containing %q", err, out.String(), tt.message)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() *verify.Options {
		return &verify.Options{As: "shop/web", TrustDomain: identity.DefaultTrustDomain, Output: "table"}
	}
	tests := []struct {
		name    string
		mod     func(*verify.Options)
		message string
	}{
		{name: "as", mod: func(*verify.Options) {}},
		{name: "cert", mod: func(o *verify.Options) { o.As, o.CertFile, o.KeyFile = "", "c", "k" }},
		{name: "expect", mod: func(o *verify.Options) { o.ExpectID, o.Output = db.String(), "json" }},
		{name: "nobody", mod: func(o *verify.Options) { o.As = "" }, message: "choose who to connect as"},
		{name: "both", mod: func(o *verify.Options) { o.CertFile, o.KeyFile = "c", "k" }, message: "choose who to connect as"},
		{name: "cert without key", mod: func(o *verify.Options) { o.As, o.CertFile = "", "c" }, message: "--cert and --key go together"},
		{name: "as without namespace", mod: func(o *verify.Options) { o.As = "web" }, message: `--as "web": want NAMESPACE/SERVICE_ACCOUNT`},
		{name: "bad output", mod: func(o *verify.Options) { o.Output = "yaml" }, message: `-o "yaml": use table or json`},
		{name: "bad trust domain", mod: func(o *verify.Options) { o.TrustDomain = "Not Valid" }, message: `--trust-domain "Not Valid"`},
		{name: "bad expect-id", mod: func(o *verify.Options) { o.ExpectID = "db" }, message: `--expect-id "db"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mod(o)
			clitest.WantUsage(t, "Validate", o.Validate(), tt.message)
		})
	}
}

// TestVerifyCAHint: a CA out of reach (the in-cluster default, from a
// workstation) is said with how to reach it, without internal prefixes.
func TestVerifyCAHint(t *testing.T) {
	f := newFixture(t)
	c := newCluster(t, f.ca.Anchor.CertPEM())
	o := f.options()
	o.CertFile, o.KeyFile, o.As, o.Connect, o.Namespace = "", "", "shop/web", c.connect, "mesh"
	o.CA, o.Timeout = "meshid-ca.mesh.svc.invalid:8443", 5*time.Second
	err := verify.Run(context.Background(), o, server(t, f.ca.Issuer, db, false), &bytes.Buffer{})
	msg := cli.Message(err)
	for _, want := range []string{"cannot reach meshid-ca at meshid-ca.mesh.svc.invalid:8443 (--ca)", "kubectl -n mesh port-forward svc/meshid-ca 8443", "--ca 127.0.0.1:8443"} {
		if !strings.Contains(msg, want) {
			t.Errorf("no %q in %q", want, msg)
		}
	}
	if strings.Contains(msg, "rotation:") || strings.Contains(msg, "verify:") {
		t.Errorf("internal prefixes in %q", msg)
	}
}
