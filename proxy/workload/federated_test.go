package workload_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/proxy/state"
	"github.com/meshid/meshid/proxy/workload"
	"github.com/meshid/meshid/rotation"
)

// TestFederatedBundles: a go-spiffe client's X509Context holds the bundle
// of every federated trust domain beside ours, and verifies a foreign SVID
// with it; our own anchors do not verify it.
func TestFederatedBundles(t *testing.T) {
	anchor, foreignAnchor := issuertest.Anchor(t), issuertest.Anchor(t, issuertest.Name("b anchor"))
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/db")
	foreignTD := spiffeid.RequireTrustDomainFromString("b.example")
	leaf := issuertest.Leaf(t, anchor, id)
	store := state.NewStore(id.TrustDomain())
	store.SetSVID(&rotation.Issued{SVID: &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf.Cert}, PrivateKey: leaf.Key}})
	local, err := bundle.New(anchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	store.SetBundle(local)
	foreign, err := bundle.New(foreignAnchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if !store.SetForeign(map[spiffeid.TrustDomain]*bundle.Bundle{foreignTD: foreign, id.TrustDomain(): foreign}) {
		t.Fatal("SetForeign reported no change")
	}
	if store.SetForeign(map[spiffeid.TrustDomain]*bundle.Bundle{foreignTD: foreign}) {
		t.Error("SetForeign of the same bundles (ours ignored) reported a change")
	}
	socket := filepath.Join(t.TempDir(), "api.sock")
	serve(t, workload.New(store, nil, nil), socket)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	if n := x509ctx.Bundles.Len(); n != 2 {
		t.Fatalf("%d bundles, want ours and b.example's", n)
	}
	peer := issuertest.Leaf(t, foreignAnchor, spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api"))
	if _, _, err := x509svid.Verify([]*x509.Certificate{peer.Cert}, x509ctx.Bundles); err != nil {
		t.Errorf("a b.example SVID does not verify with the Workload API's bundles: %v", err)
	}
	forged := issuertest.Leaf(t, anchor, spiffeid.RequireFromPath(foreignTD, "/ns/web/sa/api"))
	if _, _, err := x509svid.Verify([]*x509.Certificate{forged.Cert}, x509ctx.Bundles); err == nil {
		t.Error("a b.example SVID signed by our anchor verified")
	}
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := bundles.GetX509BundleForTrustDomain(foreignTD); err != nil || !b.HasX509Authority(foreignAnchor.Cert) {
		t.Errorf("FetchX509Bundles: b.example's bundle %v, %v", b, err)
	}
}
