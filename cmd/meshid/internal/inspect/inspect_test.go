package inspect_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/inspect"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
)

var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	anchor := pkitest.CA(t, nil, "anchor", now.Add(-time.Hour), 365*24*time.Hour)
	iss := pkitest.CA(t, anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	stranger := pkitest.CA(t, nil, "stranger", now.Add(-time.Hour), 365*24*time.Hour)
	web := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain), "/ns/shop/sa/web")
	chain, key := pkitest.Leaf(t, iss, web, now.Add(-time.Hour), 24*time.Hour)
	_, otherKey := pkitest.Leaf(t, iss, web, now.Add(-time.Hour), 24*time.Hour)
	svid := pkitest.File(t, dir, "svid.pem", pkitest.PEM(chain...))
	bundleFile := pkitest.File(t, dir, "bundle.pem", anchor.CertPEM())
	strangers := pkitest.File(t, dir, "strangers.pem", stranger.CertPEM())

	tests := []struct {
		name    string
		file    string
		stdin   string
		bundle  string
		want    []string // regexps, multi-line mode
		problem string   // empty: no error
	}{
		{
			name: "SVID", file: svid,
			want: []string{
				`^Certificate 0\s+$`, `^  SPIFFE ID\s+spiffe://cluster.local/ns/shop/sa/web$`, `^  Issuer\s+CN=issuer,O=meshid$`,
				`^  Valid\s+2030-06-01T11:00:00Z to 2030-06-02T11:00:00Z \(23h00m\)$`, `^  Key\s+ECDSA P-256$`, `^  CA\s+false$`, `^  SHA-256\s+[0-9a-f]{64}$`,
				`^Certificate 1\s+CN=issuer,O=meshid$`, `^  CA\s+true, path length 0$`,
			},
		},
		{
			name: "SVID against its bundle", file: svid, bundle: bundleFile,
			want: []string{`^Chain\s+verifies against ` + regexp.QuoteMeta(bundleFile) + ` \(anchor CN=anchor,O=meshid\)$`},
		},
		{
			name: "issuer against its bundle", file: pkitest.File(t, dir, "issuer.pem", iss.CertPEM()), bundle: bundleFile,
			want: []string{`^Chain\s+verifies against .* \(anchor CN=anchor,O=meshid\)$`},
		},
		{
			name: "anchor against itself", file: bundleFile, bundle: bundleFile,
			want: []string{`^  Valid\s+2030-06-01T11:00:00Z to 2031-06-01T11:00:00Z \(364d\)$`, `^Chain\s+verifies against .* \(anchor CN=anchor,O=meshid\)$`},
		},
		{
			name: "SVID against another bundle", file: svid, bundle: strangers,
			want:    []string{`^Chain\s+DOES NOT VERIFY against ` + regexp.QuoteMeta(strangers) + `: `},
			problem: "inspect: the chain does not verify: ",
		},
		{
			name: "issuer against another bundle", file: pkitest.File(t, dir, "issuer2.pem", iss.CertPEM()), bundle: strangers,
			want:    []string{`^Chain\s+DOES NOT VERIFY against `},
			problem: "inspect: the chain does not verify: x509: ",
		},
		{
			name: "standard input", file: "-", stdin: string(pkitest.PEM(chain[0])),
			want: []string{`^  SPIFFE ID\s+spiffe://cluster.local/ns/shop/sa/web$`},
		},
		{name: "no file", file: filepath.Join(dir, "missing"), problem: "inspect: open "},
		{name: "not PEM", file: pkitest.File(t, dir, "junk", []byte("junk")), problem: "inspect: " + filepath.Join(dir, "junk") + ": no PEM CERTIFICATE block found"},
		{name: "a key alone", file: pkitest.File(t, dir, "key.pem", pkitest.KeyPEM(t, key)), problem: `only a private key (ECDSA P-256), no certificate`},
		{name: "another block", file: pkitest.File(t, dir, "csr.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}})), problem: `block 1 is "CERTIFICATE REQUEST"`},
		{
			name: "DER", file: pkitest.File(t, dir, "svid.der", chain[0].Raw),
			want: []string{`^Certificate 0\s+$`, `^  SPIFFE ID\s+spiffe://cluster.local/ns/shop/sa/web$`},
		},
		{
			name: "DER chain against its bundle", file: pkitest.File(t, dir, "chain.der", append(append([]byte{}, chain[0].Raw...), chain[1].Raw...)), bundle: bundleFile,
			want: []string{`^Certificate 1\s+CN=issuer,O=meshid$`, `^Chain\s+verifies against `},
		},
		{
			name: "certificate and its key", file: pkitest.File(t, dir, "both.pem", append(pkitest.PEM(chain...), pkitest.KeyPEM(t, key)...)),
			want: []string{`^Private key\s+ECDSA P-256 \(PEM block 3\), matches certificate 0$`},
		},
		{
			name: "certificate and another key", file: pkitest.File(t, dir, "other.pem", append(pkitest.PEM(chain...), pkitest.KeyPEM(t, otherKey)...)),
			want:    []string{`^Private key\s+ECDSA P-256 \(PEM block 3\), matches none of the certificates$`},
			problem: "inspect: the private key in block 3 (ECDSA P-256) matches none of the certificates",
		},
		{
			name: "usages and path length", file: svid,
			want: []string{`^  Key usage\s+DigitalSignature$`, `^  Ext key usage\s+ServerAuth, ClientAuth$`, `^  CA\s+true, path length 0$`, `^  Key usage\s+DigitalSignature, CertSign, CRLSign$`},
		},
		{
			name: "serial with a leading zero", file: pkitest.File(t, dir, "zero.pem", pkitest.PEM(selfSigned(t, big.NewInt(0x0abc)))),
			want: []string{`^  Serial\s+0abc$`},
		},
		{name: "no bundle file", file: svid, bundle: filepath.Join(dir, "missing"), problem: "inspect: open "},
		{name: "bundle not PEM", file: svid, bundle: pkitest.File(t, dir, "junk2", []byte("junk")), problem: "inspect: --bundle "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &inspect.Options{BundleFile: tt.bundle, Output: "table", Stdin: strings.NewReader(tt.stdin), Clock: clocktesting.NewFakePassiveClock(now)}
			var out bytes.Buffer
			err := inspect.Run(context.Background(), o, tt.file, &out)
			if tt.problem == "" && err != nil || tt.problem != "" && (err == nil || !strings.Contains(err.Error(), tt.problem)) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.problem)
			}
			for _, w := range tt.want {
				if !regexp.MustCompile("(?m)" + w).MatchString(out.String()) {
					t.Errorf("no line matching %s in\n%s", w, out.String())
				}
			}
		})
	}
}

func TestInspectJSON(t *testing.T) {
	dir := t.TempDir()
	anchor := pkitest.CA(t, nil, "anchor", now.Add(-time.Hour), 365*24*time.Hour)
	stranger := pkitest.CA(t, nil, "stranger", now.Add(-time.Hour), 365*24*time.Hour)
	for _, tt := range []struct {
		bundle   string
		verified bool
	}{
		{pkitest.File(t, dir, "a.pem", anchor.CertPEM()), true},
		{pkitest.File(t, dir, "s.pem", stranger.CertPEM()), false},
	} {
		o := &inspect.Options{BundleFile: tt.bundle, Output: "json", Clock: clocktesting.NewFakePassiveClock(now)}
		var out bytes.Buffer
		err := inspect.Run(context.Background(), o, pkitest.File(t, dir, "anchor.pem", anchor.CertPEM()), &out)
		if (err == nil) != tt.verified {
			t.Fatalf("Run = %v, want verified %v", err, tt.verified)
		}
		var rep inspect.Report
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.Certificates) != 1 || rep.Certificates[0].TimeLeft != "364d" || !rep.Certificates[0].IsCA || rep.Verified == nil || *rep.Verified != tt.verified || (rep.Problem == "") != tt.verified {
			t.Fatalf("report %+v", rep)
		}
	}
}

// selfSigned is a certificate with serial.
func selfSigned(t *testing.T, serial *big.Int) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "zero"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
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

// TestInspectKeyJSON: a key is reported by type and by the certificate it
// matches, and its bytes appear nowhere in the output.
func TestInspectKeyJSON(t *testing.T) {
	dir := t.TempDir()
	anchor := pkitest.CA(t, nil, "anchor", now.Add(-time.Hour), 365*24*time.Hour)
	key, err := anchor.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"json", "table"} {
		o := &inspect.Options{Output: format, Clock: clocktesting.NewFakePassiveClock(now)}
		var out bytes.Buffer
		if err := inspect.Run(context.Background(), o, pkitest.File(t, dir, "ca-"+format+".pem", append(anchor.CertPEM(), key...)), &out); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(key)
		for _, secret := range []string{base64.StdEncoding.EncodeToString(block.Bytes)[:24], hex.EncodeToString(block.Bytes)[:24], "PRIVATE KEY-----"} {
			if strings.Contains(out.String(), secret) {
				t.Fatalf("-o %s printed the key's bytes:\n%s", format, out.String())
			}
		}
		if format != "json" {
			continue
		}
		var rep inspect.Report
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Format != "pem" || len(rep.Keys) != 1 || rep.Keys[0].Type != "ECDSA P-256" || rep.Keys[0].Matches == nil || *rep.Keys[0].Matches != 0 ||
			rep.Certificates[0].PathLen == "" || len(rep.Certificates[0].KeyUsage) == 0 {
			t.Fatalf("report %+v", rep)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, output := range []string{"table", "json"} {
		if err := (&inspect.Options{Output: output}).Validate(); err != nil {
			t.Fatalf("-o %s: %v", output, err)
		}
	}
	var usage *cli.UsageError
	if err := (&inspect.Options{Output: "yaml"}).Validate(); !errors.As(err, &usage) || !strings.Contains(err.Error(), `-o "yaml": use table or json`) {
		t.Fatalf("Validate = %v, want a usage error", err)
	}
}
