package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// tokens is an Authenticator that knows a fixed set of tokens.
type tokens map[string]string // token -> "ns/sa", or an authn.Reason

func (tk tokens) Review(_ context.Context, token string) (authn.Result, bool, error) {
	v, ok := tk[token]
	if !ok {
		return authn.Result{}, false, &authn.Error{Reason: authn.Rejected, Detail: "unknown token"}
	}
	switch r := authn.Reason(v); r {
	case authn.Unavailable, authn.NotServiceAccount:
		return authn.Result{}, false, &authn.Error{Reason: r, Detail: string(r)}
	}
	ns, name, _ := strings.Cut(v, "/")
	sa := identity.ServiceAccount{Namespace: ns, Name: name}
	id, err := sa.ID(td)
	return authn.Result{ID: id, ServiceAccount: sa}, false, err
}

type fixture struct {
	now    time.Time
	clock  *clocktesting.FakePassiveClock // reads now; set both
	store  *trust.Store
	server *ca.Server
	anchor *issuer.KeyPair
	issuer *issuer.KeyPair
}

func newFixture(t testing.TB, issuerTTL time.Duration) *fixture {
	t.Helper()
	f := &fixture{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	f.clock = clocktesting.NewFakePassiveClock(f.now)
	f.anchor = issuertest.Anchor(t, issuertest.NotBefore(f.now.Add(-time.Hour)))
	f.issuer = issuertest.Intermediate(t, f.anchor, issuertest.NotBefore(f.now.Add(-time.Hour)), issuertest.TTL(issuerTTL+time.Hour))
	var err error
	f.store = trust.NewStore(trust.Config{Clock: f.clock})
	f.server, err = ca.NewServer(ca.ServerConfig{
		TrustDomain:   td,
		Authenticator: tokens{"web": "shop/web", "ca": "meshid/meshid-ca", "down": string(authn.Unavailable), "user": string(authn.NotServiceAccount)},
		Reserved:      []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/meshid/sa/meshid-ca")},
		Trust:         f.store,
		Clock:         f.clock,
		Jitter:        func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) load(t testing.TB) {
	t.Helper()
	if _, err := f.store.SetBundle(f.anchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	key, _ := f.issuer.KeyPEM()
	if _, err := f.store.SetIssuer(f.issuer.CertPEM(), key); err != nil {
		t.Fatal(err)
	}
}

func csr(t testing.TB) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// csrAsking is a CSR with the given extensions.
func csrAsking(t *testing.T, exts ...pkix.Extension) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{ExtraExtensions: exts}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCertifyLeaf(t *testing.T) {
	f := newFixture(t, 48*time.Hour)
	f.load(t)
	resp, err := f.server.Certify(context.Background(), &identityv1.CertifyRequest{Csr: csr(t), Token: "web"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetSpiffeId(); got != "spiffe://cluster.local/ns/shop/sa/web" || leaf.URIs[0].String() != got {
		t.Fatalf("SPIFFE ID %s / %s", got, leaf.URIs[0])
	}
	if want := f.now.Add(-ca.DefaultBackdate); !leaf.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s (backdated)", leaf.NotBefore, want)
	}
	if want := f.now.Add(ca.DefaultLeafTTL); !leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s", leaf.NotAfter, want)
	}
	if want := f.now.Add(time.Duration(0.6 * float64(ca.DefaultLeafTTL))); !resp.GetRenewAfter().AsTime().Equal(want) {
		t.Errorf("renew_after %s, want %s (60 %% of the lifetime at jitter 0.5)", resp.GetRenewAfter().AsTime(), want)
	}
	if len(resp.GetIntermediates()) != 1 {
		t.Fatalf("%d intermediates, want the issuer only", len(resp.GetIntermediates()))
	}
}

// TestCertifyLeafKeyID: the leaf names its key (SubjectKeyIdentifier, RFC
// 5280 4.2.1.2, derived as RFC 7093 method 1) and its issuer's, and is still
// an X.509-SVID to go-spiffe's parser.
func TestCertifyLeafKeyID(t *testing.T) {
	f := newFixture(t, 48*time.Hour)
	f.load(t)
	seen := map[string]bool{}
	for range 2 {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		resp, err := f.server.Certify(context.Background(), &identityv1.CertifyRequest{Csr: der, Token: "web"})
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		svid, err := x509svid.ParseRaw(slices.Concat(append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...)...), keyDER)
		if err != nil {
			t.Fatalf("go-spiffe does not take the leaf as an X.509-SVID: %v", err)
		}
		if svid.ID.String() != "spiffe://cluster.local/ns/shop/sa/web" {
			t.Fatalf("SVID ID %s", svid.ID)
		}
		leaf := svid.Certificates[0]
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(leaf.RawSubjectPublicKeyInfo, &spki); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(spki.PublicKey.Bytes)
		if !bytes.Equal(leaf.SubjectKeyId, sum[:20]) {
			t.Fatalf("SubjectKeyId %x, want %x (the first 160 bits of the SHA-256 of the key)", leaf.SubjectKeyId, sum[:20])
		}
		if !bytes.Equal(leaf.AuthorityKeyId, f.issuer.Cert.SubjectKeyId) || len(leaf.AuthorityKeyId) == 0 {
			t.Fatalf("AuthorityKeyId %x, want the issuer's %x", leaf.AuthorityKeyId, f.issuer.Cert.SubjectKeyId)
		}
		seen[string(leaf.SubjectKeyId)] = true
	}
	if len(seen) != 2 {
		t.Fatal("two keys got the same SubjectKeyId")
	}
}

func TestCertifyCapsAtIssuerExpiry(t *testing.T) {
	f := newFixture(t, 3*time.Hour) // the issuer has 3 h left
	f.load(t)
	resp, err := f.server.Certify(context.Background(), &identityv1.CertifyRequest{Csr: csr(t), Token: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetValidUntil().AsTime(); !got.Equal(f.issuer.Cert.NotAfter) {
		t.Fatalf("valid_until %s, want the issuer's NotAfter %s", got, f.issuer.Cert.NotAfter)
	}
}

func TestCertifyErrors(t *testing.T) {
	f := newFixture(t, 48*time.Hour)
	ctx := context.Background()
	certify := func(token string, der []byte) codes.Code {
		_, err := f.server.Certify(ctx, &identityv1.CertifyRequest{Csr: der, Token: token})
		return status.Code(err)
	}
	if got := certify("web", csr(t)); got != codes.Unavailable {
		t.Fatalf("before any issuer: %s, want Unavailable", got)
	}
	f.load(t)
	tests := []struct {
		name  string
		token string
		csr   []byte
		want  codes.Code
	}{
		{name: "unknown token", token: "nope", csr: csr(t), want: codes.Unauthenticated},
		{name: "api server down", token: "down", csr: csr(t), want: codes.Unavailable},
		{name: "not a service account", token: "user", csr: csr(t), want: codes.PermissionDenied},
		{name: "oversized csr", token: "web", csr: make([]byte, 9<<10), want: codes.InvalidArgument},
		{name: "the CA's own identity", token: "ca", csr: csr(t), want: codes.PermissionDenied},
		{name: "csr asks for extended key usages", token: "web", csr: csrAsking(t, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: []byte{0x30, 0x00}}), want: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := certify(tt.token, tt.csr); got != tt.want {
				t.Fatalf("code %s, want %s", got, tt.want)
			}
		})
	}
	f.now = f.issuer.Cert.NotAfter.Add(time.Minute) // the issuer has expired
	f.clock.SetTime(f.now)
	if got := certify("web", csr(t)); got != codes.Unavailable {
		t.Fatalf("with an expired issuer: %s, want Unavailable (another replica may have a good one)", got)
	}
}

// BenchmarkCertify measures one Certify in process (token review answered
// by a fake, as from the cache): CSR parse and check, template, signature.
func BenchmarkCertify(b *testing.B) {
	f := newFixture(b, 48*time.Hour)
	if _, err := f.store.SetBundle(f.anchor.CertPEM()); err != nil {
		b.Fatal(err)
	}
	key, _ := f.issuer.KeyPEM()
	if _, err := f.store.SetIssuer(f.issuer.CertPEM(), key); err != nil {
		b.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, leafKey)
	req := &identityv1.CertifyRequest{Csr: der, Token: "web"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.server.Certify(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
