package foreign_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/foreign"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

var (
	foreignTD  = spiffeid.RequireTrustDomainFromString("b.example")
	endpointID = spiffeid.RequireFromPath(foreignTD, "/ns/meshid/sa/meshid-ca")
)

// peer is a foreign trust domain's bundle endpoint on loopback (https_spiffe:
// it presents an SVID for endpointID from its anchor); handler answers.
type peer struct {
	anchor *issuer.KeyPair
	url    string
}

func newPeer(t *testing.T, handler http.HandlerFunc) *peer {
	t.Helper()
	anchor := issuertest.Anchor(t, issuertest.Name("b anchor"))
	leaf := issuertest.Leaf(t, anchor, endpointID)
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &peer{anchor: anchor, url: srv.URL}
}

func (p *peer) endpoint() foreign.Endpoint {
	return foreign.Endpoint{TrustDomain: foreignTD, URL: p.url, Profile: foreign.SPIFFE, ID: endpointID,
		Trusted: spiffebundle.FromX509Authorities(foreignTD, []*x509.Certificate{p.anchor.Cert})}
}

// document is the SPIFFE bundle document of anchors.
func document(t *testing.T, anchors ...*x509.Certificate) []byte {
	t.Helper()
	b := spiffebundle.FromX509Authorities(foreignTD, anchors)
	b.SetRefreshHint(time.Minute)
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// anchorOf is a self-signed CA whose URI SAN is td's SPIFFE ID, as SPIRE
// makes its anchors.
func anchorOf(t *testing.T, td spiffeid.TrustDomain) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(td.IDString())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td.Name()}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFetch: a good document is taken; every bad answer is refused with
// its reason, within the limits.
func TestFetch(t *testing.T) {
	local := issuertest.Anchor(t, issuertest.Name("our anchor"))
	localBundle, err := bundle.New(local.Cert)
	if err != nil {
		t.Fatal(err)
	}
	var release chan struct{} // the slow endpoints' answers wait on it; closed before each server closes
	var next *issuer.KeyPair  // the anchor the good endpoint also publishes
	limits := foreign.Limits{MaxBytes: 16 << 10, Timeout: 300 * time.Millisecond}
	cases := []struct {
		name   string
		answer func(t *testing.T, p *peer, w http.ResponseWriter)
		want   foreign.Reason // empty: taken
	}{
		{"good", func(t *testing.T, p *peer, w http.ResponseWriter) {
			next = issuertest.Anchor(t, issuertest.Name("b next"))
			_, _ = w.Write(document(t, p.anchor.Cert, next.Cert))
		}, ""},
		{"garbage", func(t *testing.T, p *peer, w http.ResponseWriter) {
			_, _ = w.Write([]byte("<html>not a bundle</html>"))
		}, foreign.Garbage},
		{"oversized", func(t *testing.T, p *peer, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", 32<<10) + `"}`))
		}, foreign.Oversized},
		{"error status", func(t *testing.T, p *peer, w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write(document(t, p.anchor.Cert))
		}, foreign.HTTPStatus},
		{"no anchors", func(t *testing.T, p *peer, w http.ResponseWriter) { _, _ = w.Write([]byte(`{"keys":[]}`)) }, foreign.NoAnchors},
		{"another trust domain", func(t *testing.T, p *peer, w http.ResponseWriter) {
			_, _ = w.Write(document(t, p.anchor.Cert, anchorOf(t, spiffeid.RequireTrustDomainFromString("c.example"))))
		}, foreign.OtherTrustDomain},
		{"our own bundle", func(t *testing.T, p *peer, w http.ResponseWriter) { _, _ = w.Write(document(t, local.Cert)) }, foreign.OtherTrustDomain},
		{"expired anchor", func(t *testing.T, p *peer, w http.ResponseWriter) {
			_, _ = w.Write(document(t, p.anchor.Cert, issuertest.Anchor(t, issuertest.Expired()).Cert))
		}, foreign.Expired},
		{"slow headers", func(t *testing.T, p *peer, w http.ResponseWriter) { <-release }, foreign.Slow},
		{"slow body (slowloris)", func(t *testing.T, p *peer, w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"keys":[`))
			w.(http.Flusher).Flush()
			<-release
		}, foreign.Slow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p *peer
			release = make(chan struct{})
			p = newPeer(t, func(w http.ResponseWriter, r *http.Request) { tc.answer(t, p, w) })
			t.Cleanup(func() { close(release) })
			start := time.Now()
			b, err := foreign.Fetch(context.Background(), p.endpoint(), limits)
			if err == nil {
				err = foreign.Check(b, foreignTD, localBundle, time.Now())
			}
			if took := time.Since(start); took > 5*limits.Timeout {
				t.Errorf("took %s, over the %s limit", took, limits.Timeout)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !b.HasX509Authority(next.Cert) || !b.HasX509Authority(p.anchor.Cert) {
					t.Errorf("anchors %d, want both", len(b.X509Authorities()))
				}
				if hint, ok := b.RefreshHint(); !ok || hint != time.Minute {
					t.Errorf("refresh hint %v %v, want 1m", hint, ok)
				}
				return
			}
			var fe *foreign.Error
			if !errors.As(err, &fe) || fe.Reason != tc.want || foreign.ReasonOf(err) != tc.want {
				t.Fatalf("err = %v, want reason %s", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "foreign: "+string(tc.want)+": ") {
				t.Errorf("message %q does not start with the package and reason", err)
			}
		})
	}
}

// TestFetchAuthenticatesTheEndpoint: with https_spiffe, an endpoint whose
// SVID is not the configured ID, or that chains to another anchor, is
// refused before anything is read; with https_web, the roots decide.
func TestFetchAuthenticatesTheEndpoint(t *testing.T) {
	var p *peer
	p = newPeer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(document(t, p.anchor.Cert)) })

	wrongID := p.endpoint()
	wrongID.ID = spiffeid.RequireFromPath(foreignTD, "/someone/else")
	otherAnchor := p.endpoint()
	otherAnchor.Trusted = spiffebundle.FromX509Authorities(foreignTD, []*x509.Certificate{issuertest.Anchor(t).Cert})
	web := p.endpoint()
	web.Profile, web.Trusted = foreign.Web, nil
	webSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(document(t, p.anchor.Cert)) }))
	t.Cleanup(webSrv.Close)
	webTrusting := web
	webTrusting.URL, webTrusting.Roots = webSrv.URL, x509.NewCertPool()
	webTrusting.Roots.AddCert(webSrv.Certificate())
	noInitial := p.endpoint()
	noInitial.Trusted = nil

	for name, tc := range map[string]struct {
		e    foreign.Endpoint
		want string // empty: taken
	}{
		"spiffe":                    {p.endpoint(), ""},
		"spiffe, another ID":        {wrongID, "unreachable"},
		"spiffe, another anchor":    {otherAnchor, "unreachable"},
		"web, not in the roots":     {web, "unreachable"},
		"web, a web certificate":    {webTrusting, ""},
		"spiffe, no initial bundle": {noInitial, "set initialBundle"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := foreign.Fetch(context.Background(), tc.e, foreign.Limits{Timeout: 5 * time.Second})
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Fetch = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPace(t *testing.T) {
	p := foreign.Pace{Min: 10 * time.Second, Max: time.Hour, Backoff: time.Second, Default: 5 * time.Minute}
	for name, tc := range map[string]struct {
		hint     time.Duration
		failures int
		want     time.Duration
	}{
		"the hint":                   {time.Minute, 0, time.Minute},
		"no hint":                    {0, 0, 5 * time.Minute},
		"a hint too short":           {time.Millisecond, 0, 10 * time.Second},
		"a hint too long":            {48 * time.Hour, 0, time.Hour},
		"first failure":              {time.Minute, 1, time.Second},
		"fourth failure":             {time.Minute, 4, 8 * time.Second},
		"backoff capped at hint":     {time.Minute, 20, time.Minute},
		"backoff capped, short hint": {10 * time.Second, 5, 10 * time.Second},
	} {
		if got := p.Next(tc.hint, tc.failures); got != tc.want {
			t.Errorf("%s: Next(%s, %d) = %s, want %s", name, tc.hint, tc.failures, got, tc.want)
		}
	}
}
