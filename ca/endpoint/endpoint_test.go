package endpoint_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/endpoint"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

var td = spiffeid.RequireTrustDomainFromString("a.test")

func serve(t *testing.T, b *bundle.Bundle, tlsConf *tls.Config) *httptest.Server {
	t.Helper()
	h, err := endpoint.Handler(endpoint.Config{TrustDomain: td, Bundle: func() *bundle.Bundle { return b }, RefreshHint: 42 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config = endpoint.Server(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if tlsConf != nil {
		// As meshid-ca serves it: its own TLS config, not httptest's
		// (whose Certificates would win over GetCertificate without SNI).
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = tls.NewListener(lis, tlsConf)
		srv.URL = "https://" + lis.Addr().String()
		go func() { _ = srv.Config.Serve(srv.Listener) }()
		t.Cleanup(func() { srv.Config.Close() })
		return srv
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func mustBundle(t *testing.T, anchors ...*issuer.KeyPair) *bundle.Bundle {
	t.Helper()
	var certs []*x509.Certificate
	for _, a := range anchors {
		certs = append(certs, a.Cert)
	}
	b, err := bundle.New(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFetchSPIFFEProfile: go-spiffe's own FetchBundle, authenticating the
// endpoint by its SPIFFE ID against the bundle it already holds, gets the
// anchors, the refresh hint and the sequence number.
func TestFetchSPIFFEProfile(t *testing.T) {
	anchor := issuertest.Anchor(t)
	inter := issuertest.Intermediate(t, anchor)
	caID := spiffeid.RequireFromPath(td, "/ns/meshid/sa/meshid-ca")
	svid := issuertest.Leaf(t, inter, caID)
	b := mustBundle(t, anchor)
	srv := serve(t, b, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{
		Certificate: [][]byte{svid.Cert.Raw, inter.Cert.Raw}, PrivateKey: svid.Key, Leaf: svid.Cert,
	}}})
	ctx := context.Background()
	got, err := federation.FetchBundle(ctx, td, srv.URL, federation.WithSPIFFEAuth(b.X509Bundle(td), caID))
	if err != nil {
		t.Fatal(err)
	}
	if as := got.X509Authorities(); len(as) != 1 || !as[0].Equal(anchor.Cert) {
		t.Errorf("authorities %v, want the anchor", as)
	}
	if hint, ok := got.RefreshHint(); !ok || hint != 42*time.Second {
		t.Errorf("refresh hint %v %v, want 42s", hint, ok)
	}
	if seq, ok := got.SequenceNumber(); !ok || seq != endpoint.Sequence(b) || seq == 0 {
		t.Errorf("sequence %d %v, want %d", seq, ok, endpoint.Sequence(b))
	}
	// A caller expecting another ID refuses the endpoint.
	other := spiffeid.RequireFromPath(td, "/ns/meshid/sa/impostor")
	if _, err := federation.FetchBundle(ctx, td, srv.URL, federation.WithSPIFFEAuth(b.X509Bundle(td), other)); err == nil {
		t.Error("a fetch expecting another endpoint ID succeeded")
	}
}

// TestSequenceRisesWithNewAnchor: adding an anchor (a rotation's first step)
// raises the sequence; the same anchors give the same number.
func TestSequenceRisesWithNewAnchor(t *testing.T) {
	old := issuertest.Anchor(t, issuertest.NotBefore(time.Now().Add(-time.Hour)))
	next := issuertest.Anchor(t)
	if a, b := endpoint.Sequence(mustBundle(t, old)), endpoint.Sequence(mustBundle(t, old, next)); b <= a {
		t.Errorf("sequence %d after adding an anchor, was %d", b, a)
	}
	if a, b := endpoint.Sequence(mustBundle(t, old, next)), endpoint.Sequence(mustBundle(t, next, old)); a != b {
		t.Errorf("same anchors, sequences %d and %d", a, b)
	}
}

// webCert writes a web certificate for 127.0.0.1 signed by anchor.
func webCert(t *testing.T, anchor *issuer.KeyPair, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "bundle.a.test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, anchor.Cert, key.Public(), anchor.Key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile = filepath.Join(dir, "tls.crt")
	keyFile = issuertest.WriteFile(t, dir, "tls.key", issuertest.KeyPEM(t, key))
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestFetchWebProfile: a web certificate from files, verified by the
// caller's Web PKI roots.
func TestFetchWebProfile(t *testing.T) {
	web := issuertest.Anchor(t, issuertest.Name("web root"))
	certFile, keyFile := webCert(t, web, time.Now().Add(time.Hour))
	wc, err := endpoint.NewWebCert(certFile, keyFile, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	anchor := issuertest.Anchor(t)
	srv := serve(t, mustBundle(t, anchor), &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: wc.GetCertificate})
	roots := x509.NewCertPool()
	roots.AddCert(web.Cert)
	got, err := federation.FetchBundle(context.Background(), td, srv.URL, federation.WithWebPKIRoots(roots))
	if err != nil {
		t.Fatal(err)
	}
	if as := got.X509Authorities(); len(as) != 1 || !as[0].Equal(anchor.Cert) {
		t.Errorf("authorities %v, want the anchor", as)
	}
	// A caller without the web root refuses the endpoint.
	if _, err := federation.FetchBundle(context.Background(), td, srv.URL, federation.WithWebPKIRoots(x509.NewCertPool())); err == nil {
		t.Error("the endpoint was accepted without its web root")
	}
}

// TestWebCertRefused: an expired or unloadable pair is refused with the
// file named, at start.
func TestWebCertRefused(t *testing.T) {
	web := issuertest.Anchor(t)
	certFile, keyFile := webCert(t, web, time.Now().Add(-time.Second))
	if _, err := endpoint.NewWebCert(certFile, keyFile, nil, nil); err == nil || !strings.Contains(err.Error(), "not now") {
		t.Errorf("expired web certificate: %v", err)
	}
	if _, err := endpoint.NewWebCert(certFile, filepath.Join(t.TempDir(), "missing"), nil, nil); err == nil {
		t.Error("a missing key file was accepted")
	}
}

// TestNoBundleYet: before the first bundle the endpoint answers 503, not an
// empty document a peer would trust.
func TestNoBundleYet(t *testing.T) {
	srv := serve(t, nil, nil)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
}

// TestDocumentParses: what the handler serves is a SPIFFE bundle document
// go-spiffe parses back to the same anchors.
func TestDocumentParses(t *testing.T) {
	anchor := issuertest.Anchor(t)
	srv := serve(t, mustBundle(t, anchor), nil)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	got, err := spiffebundle.Read(td, bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	if !got.HasX509Authority(anchor.Cert) {
		t.Error("the anchor is not in the document")
	}
}

func TestParseProfile(t *testing.T) {
	for _, s := range []string{"https_spiffe", "https_web"} {
		if p, err := endpoint.ParseProfile(s); err != nil || string(p) != s {
			t.Errorf("%s: %v %v", s, p, err)
		}
	}
	if _, err := endpoint.ParseProfile("http"); err == nil {
		t.Error("http accepted")
	}
}
