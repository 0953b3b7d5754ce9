package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/endpoint"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

// TestBundleEndpointSPIFFE: a Service with --federation-listen serves its
// bundle on a listener of its own, authenticated by its own SVID: go-spiffe's
// FetchBundle, holding the bundle and expecting the CA's SPIFFE ID, gets the
// anchors with the configured refresh hint; a new anchor in the bundle file
// is served with a higher sequence number.
func TestBundleEndpointSPIFFE(t *testing.T) {
	now := time.Now()
	anchor, err := issuer.NewAnchor(issuer.CAParams{CommonName: "anchor", NotBefore: now.Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", NotBefore: now.Add(-time.Hour), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	next, err := issuer.NewAnchor(issuer.CAParams{CommonName: "next anchor", NotBefore: now, TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, f, ctx := runService(t, anchor, inter, func(c *ca.Config) {
		c.FederationListen, c.FederationRefreshHint = "127.0.0.1:0", 30*time.Second
	})
	b, err := bundle.New(anchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	caID := spiffeid.RequireFromPath(td, "/ns/meshid/sa/meshid-ca")
	// fetch polls the endpoint until cond accepts what it serves, for at
	// most 10 s (the listener opens and the files load asynchronously).
	fetch := func(cond func(*spiffebundle.Bundle) bool) *spiffebundle.Bundle {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var got *spiffebundle.Bundle
			err := context.Canceled
			if addr := s.FederationAddr(); addr != "" {
				got, err = federation.FetchBundle(ctx, td, "https://"+addr, federation.WithSPIFFEAuth(b.X509Bundle(td), caID))
				if err == nil && cond(got) {
					return got
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("bundle endpoint: %v, last %v", err, got)
			}
			time.Sleep(10 * time.Millisecond) // the files are polled every 10 ms
		}
	}
	got := fetch(func(got *spiffebundle.Bundle) bool { return got.HasX509Authority(anchor.Cert) })
	if hint, _ := got.RefreshHint(); hint != 30*time.Second {
		t.Errorf("refresh hint %v, want 30s", hint)
	}
	seq, _ := got.SequenceNumber()

	t.Log("a second anchor is published, with a higher sequence number")
	f.write(t, f.bundle, append(anchor.CertPEM(), next.CertPEM()...))
	got = fetch(func(got *spiffebundle.Bundle) bool { return got.HasX509Authority(next.Cert) })
	if seq2, _ := got.SequenceNumber(); seq2 <= seq || len(got.X509Authorities()) != 2 {
		t.Errorf("sequence %d -> %d, %d anchors; want higher and 2", seq, seq2, len(got.X509Authorities()))
	}
}

func TestFederationConfig(t *testing.T) {
	base := func() ca.Config {
		return ca.Config{
			TrustDomain: td, Audience: identity.DefaultAudience, Namespace: "meshid", ServiceAccount: "meshid-ca",
			IssuerSecret: "i", BundleConfigMap: "b", Listen: ":8443",
		}
	}
	for name, tc := range map[string]struct {
		mod  func(*ca.Config)
		want string // empty: valid
	}{
		"none":              {func(*ca.Config) {}, ""},
		"spiffe by default": {func(c *ca.Config) { c.FederationListen = ":8444" }, ""},
		"web with files": {func(c *ca.Config) {
			c.FederationListen, c.FederationProfile, c.FederationCertFile, c.FederationKeyFile = ":8444", endpoint.Web, "c", "k"
		}, ""},
		"web without files":    {func(c *ca.Config) { c.FederationListen, c.FederationProfile = ":8444", endpoint.Web }, "needs --federation-cert-file"},
		"files with spiffe":    {func(c *ca.Config) { c.FederationListen, c.FederationCertFile, c.FederationKeyFile = ":8444", "c", "k" }, "are for --federation-profile https_web"},
		"profile, no listener": {func(c *ca.Config) { c.FederationProfile = endpoint.SPIFFE }, "need --federation-listen"},
		"unknown profile":      {func(c *ca.Config) { c.FederationListen, c.FederationProfile = ":8444", "http" }, "not https_spiffe or https_web"},
	} {
		t.Run(name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
