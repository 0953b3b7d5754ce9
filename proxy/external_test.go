package proxy

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/proxy/state"
	"github.com/meshid/meshid/rotation"
)

// TestStateDir: a certificate kept in the state dir comes back (key 0600,
// dir 0700); an expired one, or one of another trust bundle, does not.
func TestStateDir(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	anchor := issuertest.Anchor(t)
	inter := issuertest.Intermediate(t, anchor, issuertest.PathLenZero())
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/vm")
	leaf := issuertest.Leaf(t, inter, id)
	dir := filepath.Join(t.TempDir(), "state")
	newProxy := func(anchorPEM []byte) *Proxy {
		p := &Proxy{cfg: Config{External: &External{StateDir: dir}}, store: state.NewStore(td)}
		b, err := bundle.Parse(anchorPEM)
		if err != nil {
			t.Fatal(err)
		}
		p.store.SetBundle(b)
		return p
	}
	p := newProxy(anchor.CertPEM())
	if got, err := p.loadState(time.Now()); got != nil || err != nil {
		t.Fatalf("empty state dir: %v, %v; want nothing", got, err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{leaf.Cert}, leaf.Chain...), PrivateKey: leaf.Key}
	if err := p.saveState(&rotation.Issued{SVID: svid}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"": 0o700, stateKey: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v); want %v", filepath.Join(dir, name), fi.Mode().Perm(), err, want)
		}
	}
	got, err := p.loadState(time.Now())
	if err != nil || got == nil || !got.SVID.Certificates[0].Equal(leaf.Cert) || !got.RenewAfter.Before(leaf.Cert.NotAfter) {
		t.Fatalf("loaded %v, %v; want the saved certificate, renewing before it expires", got, err)
	}
	if _, err := p.loadState(leaf.Cert.NotAfter); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("at its expiry: %v; want expired", err)
	}
	other := newProxy(issuertest.Anchor(t, issuertest.Name("other")).CertPEM())
	if _, err := other.loadState(time.Now()); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Fatalf("another bundle: %v; want does not chain", err)
	}
}
