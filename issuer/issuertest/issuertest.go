package issuertest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

// Defaults, when no option says otherwise.
const (
	AnchorTTL       = 365 * 24 * time.Hour
	IntermediateTTL = 48 * time.Hour
	LeafTTL         = time.Hour
)

// Option changes what a helper makes. Each helper says which it honours.
type Option func(*options)

type options struct {
	name        string
	notBefore   time.Time // zero: now
	ttl         time.Duration
	pathLenZero bool
	notCA       bool
	isCA        bool
	keyUsage    *x509.KeyUsage
}

// Name sets the subject's common name.
func Name(cn string) Option { return func(o *options) { o.name = cn } }

// NotBefore sets when the certificate becomes valid; without it, now.
func NotBefore(t time.Time) Option { return func(o *options) { o.notBefore = t } }

// TTL sets the certificate's lifetime from NotBefore.
func TTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// Expired makes a certificate that was valid from 72 h ago for 48 h: it
// expired a day ago.
func Expired() Option {
	return func(o *options) { o.notBefore, o.ttl = time.Now().Add(-72*time.Hour), 48*time.Hour }
}

// PathLenZero forbids a CA from signing other CAs, as meshid's issuers are.
func PathLenZero() Option { return func(o *options) { o.pathLenZero = true } }

// NotCA makes Certificate's certificate a non-CA (basicConstraints
// CA:FALSE). Certificate only.
func NotCA() Option { return func(o *options) { o.notCA = true } }

// CA makes Leaf's certificate claim CA:TRUE, which no leaf may. Leaf only.
func CA() Option { return func(o *options) { o.isCA = true } }

// KeyUsage replaces the certificate's key usage. Certificate and Leaf only.
func KeyUsage(u x509.KeyUsage) Option { return func(o *options) { o.keyUsage = &u } }

func apply(opts []Option, name string, ttl time.Duration) options {
	o := options{name: name, ttl: ttl}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Anchor returns a new self-signed trust anchor made by issuer.NewAnchor,
// named "anchor", valid from now for AnchorTTL. It honours Name,
// NotBefore, TTL, Expired and PathLenZero.
func Anchor(t testing.TB, opts ...Option) *issuer.KeyPair {
	t.Helper()
	o := apply(opts, "anchor", AnchorTTL)
	o.onlyCA(t)
	kp, err := issuer.NewAnchor(o.caParams())
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// Intermediate returns a CA signed by parent, made by
// parent.NewIntermediate, named "issuer", valid from now for
// IntermediateTTL. It honours the options Anchor does.
func Intermediate(t testing.TB, parent *issuer.KeyPair, opts ...Option) *issuer.KeyPair {
	t.Helper()
	o := apply(opts, "issuer", IntermediateTTL)
	o.onlyCA(t)
	kp, err := parent.NewIntermediate(o.caParams())
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func (o options) onlyCA(t testing.TB) {
	t.Helper()
	if o.notCA || o.isCA || o.keyUsage != nil {
		t.Fatal("issuertest: issuer refuses a CA with that defect; make it with Certificate")
	}
}

func (o options) caParams() issuer.CAParams {
	return issuer.CAParams{CommonName: o.name, NotBefore: o.notBefore, TTL: o.ttl, MaxPathLenZero: o.pathLenZero}
}

// Cert is a certificate with its private key, which issuer may refuse to
// load: a leaf, or a CA with a defect.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds the certificates above Cert, anchor excluded.
	Chain []*x509.Certificate
}

// CertPEM returns Cert then Chain as PEM, as a tls.crt holds them.
func (c *Cert) CertPEM() []byte {
	return bundle.Encode(append([]*x509.Certificate{c.Cert}, c.Chain...))
}

// KeyPEM returns Key as PKCS#8 PEM.
func (c *Cert) KeyPEM(t testing.TB) []byte {
	t.Helper()
	return KeyPEM(t, c.Key)
}

// Leaf returns an X.509-SVID for id signed by parent, built as meshid-ca
// builds them (issuer.LeafTemplate), valid from now for LeafTTL (capped at
// parent's lifetime). It honours NotBefore, TTL, Expired, CA and KeyUsage.
func Leaf(t testing.TB, parent *issuer.KeyPair, id spiffeid.ID, opts ...Option) *Cert {
	t.Helper()
	o := apply(opts, "", LeafTTL)
	if o.notCA || o.pathLenZero || o.name != "" {
		t.Fatal("issuertest: Leaf honours NotBefore, TTL, Expired, CA and KeyUsage only")
	}
	key := newKey(t)
	tmpl, err := issuer.LeafTemplate(issuer.LeafParams{ID: id, PublicKey: key.Public(), Now: o.now(), TTL: o.ttl}, parent)
	if err != nil {
		t.Fatal(err)
	}
	if o.isCA {
		tmpl.IsCA = true
	}
	if o.keyUsage != nil {
		tmpl.KeyUsage = *o.keyUsage
	}
	out, err := parent.SignTemplate(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := out.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: leaf, Key: key, Chain: chainBelow(parent)}
}

// Certificate returns a certificate signed by parent, or self-signed when
// parent is nil, made like issuer's CAs (CA:TRUE, certSign, cRLSign and
// digitalSignature), named "test", valid from now for IntermediateTTL:
// the helper for the material issuer refuses. It honours Name, NotBefore,
// TTL, Expired, PathLenZero, NotCA and KeyUsage.
func Certificate(t testing.TB, parent *issuer.KeyPair, opts ...Option) *Cert {
	t.Helper()
	o := apply(opts, "test", IntermediateTTL)
	if o.isCA {
		t.Fatal("issuertest: Certificate makes a CA unless NotCA; CA is for Leaf")
	}
	serial, err := issuer.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	nb := o.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.name, Organization: []string{"meshid"}},
		NotBefore:             nb,
		NotAfter:              nb.Add(o.ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  !o.notCA,
		MaxPathLenZero:        o.pathLenZero,
	}
	if o.notCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if o.keyUsage != nil {
		tmpl.KeyUsage = *o.keyUsage
	}
	key := newKey(t)
	signer, signerKey, chain := tmpl, crypto.Signer(key), []*x509.Certificate(nil)
	if parent != nil {
		signer, signerKey, chain = parent.Cert, parent.Key, chainBelow(parent)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: cert, Key: key, Chain: chain}
}

// chainBelow is what a certificate parent signs carries above itself:
// parent and its chain, without a self-signed anchor.
func chainBelow(parent *issuer.KeyPair) []*x509.Certificate {
	if len(parent.Chain) == 0 && bytes.Equal(parent.Cert.RawIssuer, parent.Cert.RawSubject) {
		return nil
	}
	return parent.Certificates()
}

func (o options) now() time.Time {
	if o.notBefore.IsZero() {
		return time.Now()
	}
	return o.notBefore
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// KeyPEM returns key as a PKCS#8 PEM block, as a tls.key holds it.
func KeyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFile writes data to dir/name with mode 0600 (it may hold a key) and
// returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
