package issuer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

var _ issuer.Signer = (*issuer.KeyPair)(nil)

func TestLeafTemplate(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	anchor := issuertest.Anchor(t, issuertest.NotBefore(now.Add(-time.Hour)))
	iss := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(49*time.Hour))
	// short's chain expires before short itself: the cap is the chain's.
	mid := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(3*time.Hour))
	short := issuertest.Intermediate(t, mid, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(49*time.Hour))
	key := issuertest.Leaf(t, iss, id).Key.Public()
	base := issuer.LeafParams{ID: id, PublicKey: key, Now: now, TTL: 24 * time.Hour}
	with := func(f func(*issuer.LeafParams)) issuer.LeafParams { p := base; f(&p); return p }

	tests := []struct {
		name      string
		p         issuer.LeafParams
		signer    issuer.Signer
		notBefore time.Time
		notAfter  time.Time
		err       string // a part of the error; empty: none
	}{
		{name: "plain", p: base, signer: iss, notBefore: now, notAfter: now.Add(24 * time.Hour)},
		{name: "backdated", p: with(func(p *issuer.LeafParams) { p.Backdate = 5 * time.Minute }), signer: iss, notBefore: now.Add(-5 * time.Minute), notAfter: now.Add(24 * time.Hour)},
		{name: "capped at the signer's NotAfter", p: with(func(p *issuer.LeafParams) { p.TTL = 100 * time.Hour }), signer: iss, notBefore: now, notAfter: iss.Cert.NotAfter},
		{name: "capped at the signer's chain", p: base, signer: short, notBefore: now, notAfter: mid.Cert.NotAfter},
		{name: "capped at MaxNotAfter", p: with(func(p *issuer.LeafParams) { p.MaxNotAfter = now.Add(time.Hour) }), signer: iss, notBefore: now, notAfter: now.Add(time.Hour)},
		{name: "MaxNotAfter past the signer's", p: with(func(p *issuer.LeafParams) { p.MaxNotAfter = now.Add(1000 * time.Hour) }), signer: iss, notBefore: now, notAfter: now.Add(24 * time.Hour)},
		{name: "signer expired", p: with(func(p *issuer.LeafParams) { p.Now = iss.Cert.NotAfter.Add(time.Minute) }), signer: iss, err: "too soon to sign a leaf"},
		{name: "no ID", p: with(func(p *issuer.LeafParams) { p.ID = spiffeid.ID{} }), signer: iss, err: "ID is required"},
		{name: "no key", p: with(func(p *issuer.LeafParams) { p.PublicKey = nil }), signer: iss, err: "PublicKey is required"},
		{name: "no time", p: with(func(p *issuer.LeafParams) { p.Now = time.Time{} }), signer: iss, err: "Now is required"},
		{name: "no TTL", p: with(func(p *issuer.LeafParams) { p.TTL = 0 }), signer: iss, err: "TTL must be above zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := issuer.LeafTemplate(tt.p, tt.signer)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "issuer: ") {
					t.Fatalf("LeafTemplate error = %v; want one with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tmpl.NotBefore.Equal(tt.notBefore) || !tmpl.NotAfter.Equal(tt.notAfter) {
				t.Fatalf("valid %s to %s, want %s to %s", tmpl.NotBefore, tmpl.NotAfter, tt.notBefore, tt.notAfter)
			}
		})
	}
}

func TestSignLeaf(t *testing.T) {
	now := time.Now()
	anchor := issuertest.Anchor(t)
	iss := issuertest.Intermediate(t, anchor)
	key := issuertest.Leaf(t, iss, id).Key.Public()
	out, err := iss.Sign(context.Background(), issuer.LeafParams{ID: id, PublicKey: key, Now: now, TTL: time.Hour, DNSNames: []string{"ca.meshid.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustParse(t, out.DER)
	switch {
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String():
		t.Errorf("URI SANs %v, want only %s", leaf.URIs, id)
	case !slices.Equal(leaf.DNSNames, []string{"ca.meshid.svc"}):
		t.Errorf("DNS SANs %v", leaf.DNSNames)
	case leaf.IsCA || !leaf.BasicConstraintsValid:
		t.Error("the leaf is not marked CA:FALSE")
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage %v, want digitalSignature only", leaf.KeyUsage)
	case !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}):
		t.Errorf("extended key usage %v, want server and client auth", leaf.ExtKeyUsage)
	case len(leaf.SubjectKeyId) != 20 || !bytes.Equal(leaf.AuthorityKeyId, iss.Cert.SubjectKeyId):
		t.Errorf("subject key id %x, authority key id %x; want 160 bits and the issuer's %x", leaf.SubjectKeyId, leaf.AuthorityKeyId, iss.Cert.SubjectKeyId)
	case leaf.SerialNumber.BitLen() < 64 || leaf.SerialNumber.Cmp(out.Serial) != 0:
		t.Errorf("serial %s (Issued says %s), want a random 128-bit one", leaf.SerialNumber, out.Serial)
	case leaf.CheckSignatureFrom(iss.Cert) != nil:
		t.Error("the leaf is not signed by the issuer")
	}
}

func TestSignTemplate(t *testing.T) {
	anchor := issuertest.Anchor(t)
	iss := issuertest.Intermediate(t, anchor, issuertest.TTL(time.Hour))
	key := issuertest.Leaf(t, iss, id).Key.Public()
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now, NotAfter: now.Add(24 * time.Hour), DNSNames: []string{"webhook.meshid.svc"}}
	out, err := iss.SignTemplate(tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	if !out.NotAfter.Equal(iss.Cert.NotAfter) {
		t.Fatalf("NotAfter %s, want the issuer's %s", out.NotAfter, iss.Cert.NotAfter)
	}
	if !tmpl.NotAfter.Equal(now.Add(24 * time.Hour)) {
		t.Fatal("SignTemplate modified the caller's template")
	}
	if _, err := iss.SignTemplate(nil, key); err == nil {
		t.Fatal("SignTemplate accepted no template")
	}
}

// upstream is a Signer that is not a KeyPair: the trust checks must work
// from Certificate and UpstreamChain alone.
type upstream struct {
	cert  *x509.Certificate
	chain []*x509.Certificate
}

func (u upstream) Sign(context.Context, issuer.LeafParams) (*issuer.Issued, error) {
	return nil, errors.New("not used")
}
func (u upstream) Certificate() *x509.Certificate     { return u.cert }
func (u upstream) UpstreamChain() []*x509.Certificate { return u.chain }

func TestVerifyAnySigner(t *testing.T) {
	now := time.Now()
	anchor := issuertest.Anchor(t, issuertest.NotBefore(now.Add(-time.Hour)))
	mid := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(10*time.Hour))
	leafCA := issuertest.Intermediate(t, mid, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(48*time.Hour))
	b, _ := bundle.New(anchor.Cert)

	s := upstream{cert: leafCA.Cert, chain: leafCA.Chain}
	exp, err := issuer.ChainExpiry(s, b, now)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(mid.Cert.NotAfter) || !issuer.NotAfter(s).Equal(mid.Cert.NotAfter) {
		t.Fatalf("chain expiry %s, NotAfter %s; want the middle CA's %s", exp, issuer.NotAfter(s), mid.Cert.NotAfter)
	}
	if issuer.Fingerprint(s) != leafCA.Fingerprint() {
		t.Fatal("Fingerprint differs from the key pair's")
	}
	if err := issuer.Verify(upstream{cert: leafCA.Cert}, b, now); !errors.Is(err, issuer.ErrUntrusted) {
		t.Fatalf("without its upstream chain: %v, want ErrUntrusted", err)
	}
	if err := issuer.CheckValidity(s, now.Add(11*time.Hour)); !errors.Is(err, issuer.ErrExpired) {
		t.Fatalf("after the middle CA expired: %v, want ErrExpired", err)
	}
}
