package csr_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca/csr"
	"github.com/meshid/meshid/identity"
)

var id = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/web")

func mustCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustDER(der []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return der
}

func uri(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestCheck(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	caTrue, _ := asn1.Marshal(struct{ IsCA bool }{true})
	caFalse, _ := asn1.Marshal(struct{}{})
	keyUsage, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7})       // keyCertSign, cRLSign
	extKeyUsage, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 3}}) // code signing
	nameConstraints, _ := asn1.Marshal(struct {
		Permitted []asn1.RawValue `asn1:"optional,tag:0"`
	}{Permitted: []asn1.RawValue{{FullBytes: mustDER(asn1.Marshal(struct {
		Base asn1.RawValue
	}{asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("example.com")}}))}}})
	ext := func(oid asn1.ObjectIdentifier, value []byte) *x509.CertificateRequest {
		return &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oid, Value: value}}}
	}

	good := mustCSR(t, p256, &x509.CertificateRequest{})
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-5] ^= 0xff

	tests := []struct {
		name string
		der  []byte
		want csr.Reason // empty: accepted
	}{
		{name: "p256 no san", der: good},
		{name: "p384 with own id", der: mustCSR(t, p384, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}})},
		{name: "ed25519", der: mustCSR(t, ed, &x509.CertificateRequest{})},
		{name: "rsa 2048", der: mustCSR(t, rsa2048, &x509.CertificateRequest{})},
		{name: "subject is ignored", der: mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}})},
		{name: "ca false extension", der: mustCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: caFalse}}})},
		{name: "garbage", der: []byte("not a csr"), want: csr.Malformed},
		{name: "empty", der: nil, want: csr.Malformed},
		{name: "oversized", der: make([]byte, csr.MaxSize+1), want: csr.Malformed},
		{name: "bad signature", der: badSig, want: csr.BadSignature},
		{name: "p224", der: mustCSR(t, p224, &x509.CertificateRequest{}), want: csr.WeakKey},
		{name: "rsa 1024", der: mustCSR(t, rsa1024, &x509.CertificateRequest{}), want: csr.WeakKey},
		{name: "ca true", der: mustCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caTrue}}}), want: csr.CARequested},
		{name: "other sa", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://cluster.local/ns/a/sa/db")}}), want: csr.NameMismatch},
		{name: "other trust domain", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://evil.example/ns/a/sa/web")}}), want: csr.NameMismatch},
		{name: "path traversal", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://cluster.local/ns/a/sa/web/../../b/sa/db")}}), want: csr.NameMismatch},
		{name: "own id twice plus another", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{id.URL(), uri("spiffe://cluster.local/ns/b/sa/db")}}), want: csr.NameMismatch},
		{name: "dns san", der: mustCSR(t, p256, &x509.CertificateRequest{DNSNames: []string{"kubernetes.default.svc"}}), want: csr.NameMismatch},
		{name: "ip san", der: mustCSR(t, p256, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), want: csr.NameMismatch},
		{name: "email san", der: mustCSR(t, p256, &x509.CertificateRequest{EmailAddresses: []string{"root@example.com"}}), want: csr.NameMismatch},
		{name: "own id twice", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{id.URL(), id.URL()}}), want: csr.NameMismatch},
		{name: "upper case scheme", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "SPIFFE", Host: identity.DefaultTrustDomain, Path: "/ns/a/sa/web"}}}), want: csr.NameMismatch},
		{name: "percent-encoded own id", der: mustCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://cluster.local/ns/a/sa/w%65b")}}), want: csr.NameMismatch},
		{name: "key usage", der: mustCSR(t, p256, ext(asn1.ObjectIdentifier{2, 5, 29, 15}, keyUsage)), want: csr.ExtensionRefused},
		{name: "extended key usage", der: mustCSR(t, p256, ext(asn1.ObjectIdentifier{2, 5, 29, 37}, extKeyUsage)), want: csr.ExtensionRefused},
		{name: "name constraints", der: mustCSR(t, p256, ext(asn1.ObjectIdentifier{2, 5, 29, 30}, nameConstraints)), want: csr.ExtensionRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := csr.Check(tt.der, id)
			if tt.want == "" {
				if err != nil || pub == nil {
					t.Fatalf("Check = %v, %v; want accepted", pub, err)
				}
				return
			}
			var e *csr.Error
			if !errors.As(err, &e) || e.Reason != tt.want {
				t.Fatalf("Check error = %v; want reason %s", err, tt.want)
			}
			if pub != nil {
				t.Fatal("a refused request returned a key")
			}
		})
	}
}

func FuzzCheck(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(mustCSR(f, key, &x509.CertificateRequest{}))
	f.Add(mustCSR(f, key, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}, DNSNames: []string{"x"}}))
	f.Add(mustCSR(f, key, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "SPIFFE", Host: identity.DefaultTrustDomain, Path: "/ns/a/sa/web"}}}))
	f.Add(mustCSR(f, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: []byte{0x30, 0x00}}}}))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := csr.Check(der, id)
		if err != nil {
			var e *csr.Error
			if !errors.As(err, &e) || e.Reason == "" || pub != nil {
				t.Fatalf("error %v is not a *csr.Error with a reason, or a key came back", err)
			}
			return
		}
		// Anything accepted parses, is self-signed, and names no one else.
		req, perr := x509.ParseCertificateRequest(der)
		if perr != nil || req.CheckSignature() != nil {
			t.Fatalf("accepted a request that does not parse or verify: %v", perr)
		}
		for _, u := range req.URIs {
			if u.String() != id.String() {
				t.Fatalf("accepted a request naming %s", u)
			}
		}
		if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses) > 0 {
			t.Fatal("accepted a request with a non-URI SAN")
		}
		if len(req.URIs) > 1 {
			t.Fatalf("accepted a request naming %d URIs", len(req.URIs))
		}
		for _, ext := range req.Extensions {
			for _, refused := range []asn1.ObjectIdentifier{{2, 5, 29, 15}, {2, 5, 29, 37}, {2, 5, 29, 30}} {
				if ext.Id.Equal(refused) {
					t.Fatalf("accepted a request asking for extension %s", ext.Id)
				}
			}
		}
	})
}
