package certinfo_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
)

func TestTimeLeft(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		left time.Duration
		want string
	}{
		{90 * 24 * time.Hour, "90d"},
		{48 * time.Hour, "2d"},
		{47*time.Hour + 59*time.Minute, "47h59m"},
		{time.Hour + 5*time.Minute, "1h05m"},
		{59*time.Minute + 9*time.Second, "59m09s"},
		{40*time.Second + 400*time.Millisecond, "40s"},
		{0, "0s"},
		{-3 * 24 * time.Hour, "expired 3d ago"},
		{-90 * time.Second, "expired 1m30s ago"},
	}
	for _, tt := range tests {
		if got := certinfo.TimeLeft(now.Add(tt.left), now); got != tt.want {
			t.Errorf("TimeLeft(%s) = %q, want %q", tt.left, got, tt.want)
		}
	}
}

func TestDescribeKeyTypes(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	for _, tt := range []struct {
		key  any
		pub  any
		want string
	}{
		{ec, ec.Public(), "ECDSA P-384"},
		{rs, rs.Public(), "RSA 2048"},
		{ed, ed.Public(), "Ed25519"},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"x.example"}, NotBefore: now, NotAfter: now.Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, tt.pub, tt.key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		r := certinfo.Describe(c, now)
		if r.KeyType != tt.want || r.Serial != "2a" || r.Subject != "CN=x" || r.SPIFFEID != "" || len(r.DNSNames) != 1 || len(r.SHA256) != 64 {
			t.Errorf("Describe = %+v, want key type %s", r, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now, NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	tests := []struct {
		name    string
		data    []byte
		n       int
		message string
	}{
		{name: "two certificates", data: append(append([]byte("text before\n"), cert...), cert...), n: 2},
		{name: "nothing", data: []byte("junk"), message: "no PEM CERTIFICATE block found"},
		{name: "a key after a certificate", data: append(append([]byte{}, cert...), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})...), message: `block 2 is "EC PRIVATE KEY"; inspect reads certificates only`},
		{name: "not DER", data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), message: "block 1: x509: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := certinfo.Parse(tt.data)
			switch {
			case tt.message == "" && (err != nil || len(certs) != tt.n):
				t.Fatalf("Parse = %d certificates, %v; want %d", len(certs), err, tt.n)
			case tt.message != "" && (err == nil || !strings.Contains(err.Error(), tt.message)):
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.message)
			}
		})
	}
}
