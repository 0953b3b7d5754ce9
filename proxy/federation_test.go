package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/policy"
)

// TestFederatedPeers: an inbound peer of a federated trust domain is
// verified against that domain's bundle only and admitted only by a rule
// naming it; every mode keeps admitting our own; an outbound server of a
// federated trust domain verifies when it is the one wanted.
func TestFederatedPeers(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	foreignTD := spiffeid.RequireTrustDomainFromString("b.example")
	p, err := New(Config{
		TrustDomain: td, CA: "127.0.0.1:1", CAID: spiffeid.RequireFromPath(td, "/ns/meshid/sa/meshid-ca"),
		TokenFile: "token", BundleFile: "bundle", Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	anchor, foreignAnchor := issuertest.Anchor(t), issuertest.Anchor(t, issuertest.Name("b anchor"))
	local, _ := bundle.New(anchor.Cert)
	foreign, _ := bundle.New(foreignAnchor.Cert)
	p.store.SetBundle(local)
	pol, err := policy.Parse([]byte(`
ports:
- port: 8443
  allow:
  - id: spiffe://b.example/ns/web/sa/api
  - serviceAccount: shop/web
- port: 9000
  mode: cluster-authenticated
- port: 9001
  mode: all-authenticated
`), td)
	if err != nil {
		t.Fatal(err)
	}
	p.policy.Store(pol)

	named := issuertest.Leaf(t, foreignAnchor, spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api")).Cert
	unnamed := issuertest.Leaf(t, foreignAnchor, spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/other")).Cert
	forged := issuertest.Leaf(t, anchor, spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api")).Cert // b.example's name, our anchor
	ours := issuertest.Leaf(t, anchor, spiffeid.RequireFromPath(td, "/ns/shop/sa/web")).Cert
	verify := func(port int, cert *x509.Certificate) string {
		err := p.serverTLS(port).VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
		if err == nil {
			return "admitted"
		}
		var r *refusal
		if !errors.As(err, &r) {
			t.Fatalf("port %d: %v is not a refusal", port, err)
		}
		return r.reason
	}

	t.Log("before federation, b.example's peers do not verify")
	if got := verify(8443, named); got != reasonUntrusted {
		t.Errorf("named foreign peer before federation: %s, want %s", got, reasonUntrusted)
	}
	p.store.SetForeign(map[spiffeid.TrustDomain]*bundle.Bundle{foreignTD: foreign})
	for _, tc := range []struct {
		name string
		port int
		cert *x509.Certificate
		want string
	}{
		{"named foreign peer", 8443, named, "admitted"},
		{"unnamed foreign peer", 8443, unnamed, reasonDenied},
		{"foreign name signed by our anchor", 8443, forged, reasonUntrusted},
		{"foreign name signed by our anchor, all-authenticated", 9001, forged, reasonUntrusted},
		{"named foreign peer, cluster-authenticated", 9000, named, reasonDenied},
		{"named foreign peer, all-authenticated", 9001, named, reasonDenied},
		{"our peer, all-authenticated", 9001, ours, "admitted"},
		{"our peer, named", 8443, ours, "admitted"},
	} {
		if got := verify(tc.port, tc.cert); got != tc.want {
			t.Errorf("%s (port %d): %s, want %s", tc.name, tc.port, got, tc.want)
		}
	}

	client := func(want spiffeid.ID, cert *x509.Certificate) error {
		return p.clientTLS(want).VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	}
	if err := client(spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api"), named); err != nil {
		t.Errorf("outbound to the wanted b.example server: %v", err)
	}
	if err := client(spiffeid.ID{}, named); err == nil {
		t.Error("outbound with no server named took a b.example server")
	}
	if err := client(spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api"), forged); err == nil {
		t.Error("outbound took a b.example name signed by our anchor")
	}
}
