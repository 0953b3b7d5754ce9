package certify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/meshid/internal/catest"
	"github.com/meshid/meshid/cmd/meshid/internal/certify"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
)

var web = identity.ServiceAccount{Namespace: "shop", Name: "web"}

// options are certify's flag defaults against ca, with token.
func options(t *testing.T, ca *catest.CA, token string) *certify.Options {
	dir := t.TempDir()
	return &certify.Options{
		CA: ca.Addr, TrustDomain: identity.DefaultTrustDomain,
		TokenFile:       pkitest.File(t, dir, "token", []byte(token+"\n")),
		TrustBundleFile: pkitest.File(t, dir, "bundle.pem", ca.Anchor.CertPEM()),
		Timeout:         30 * time.Second, Output: "table",
	}
}

func TestCertify(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	o := options(t, ca, "web-token")
	o.OutDir = filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(o.OutDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := certify.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^SPIFFE ID\s+spiffe://cluster.local/ns/shop/sa/web$`,
		`(?m)^Serial\s+[0-9a-f]+$`,
		`(?m)^Valid\s+\S+Z to \S+Z \(2[34]h\d+m\d+s\)$`,
		`(?m)^Renew after\s+\S+Z$`,
		`(?m)^Chain\[0\]\s+spiffe://cluster.local/ns/shop/sa/web \(expires \S+Z, in 2[34]h\d\dm\)$`,
		`(?m)^Chain\[1\]\s+CN=catest issuer,O=meshid `,
		`(?m)^Chain\[2\]\s+CN=catest anchor,O=meshid `,
		`(?m)^Wrote\s+.*/out/svid.pem$`,
		`(?m)^Wrote\s+.*/out/svid.key$`,
		`(?m)^Wrote\s+.*/out/bundle.pem$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", want, out.String())
		}
	}
	svid, err := x509svid.Load(filepath.Join(o.OutDir, "svid.pem"), filepath.Join(o.OutDir, "svid.key"))
	if err != nil || svid.ID.String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("the written SVID: %v, %v", svid, err)
	}
	if fi, err := os.Stat(filepath.Join(o.OutDir, "svid.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v, mode %v; want 0600", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(o.OutDir, "bundle.pem")); !bytes.Equal(b, ca.Anchor.CertPEM()) {
		t.Fatal("bundle.pem is not the trust bundle")
	}
}

func TestCertifyJSON(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	o := options(t, ca, "web-token")
	o.Output = "json"
	var out bytes.Buffer
	if err := certify.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	var rep certify.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.SPIFFEID != "spiffe://cluster.local/ns/shop/sa/web" || len(rep.Chain) != 3 || rep.Anchor != "CN=catest anchor,O=meshid" || !rep.RenewAfter.After(rep.NotBefore) || len(rep.Files) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestCertifyRefusals(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	tests := []struct {
		name    string
		mod     func(*certify.Options)
		message string
	}{
		{name: "unknown token", mod: func(o *certify.Options) { pkitest.File(t, filepath.Dir(o.TokenFile), "token", []byte("nobody")) }, message: "unknown token"},
		{name: "CA is not who it should be", mod: func(o *certify.Options) { o.CAID = "spiffe://cluster.local/ns/x/sa/impostor" }, message: "spiffe://cluster.local/ns/x/sa/impostor was expected"},
		{name: "token file missing", mod: func(o *certify.Options) { o.TokenFile = filepath.Join(t.TempDir(), "missing") }, message: "certify: open "},
		{name: "bundle file missing", mod: func(o *certify.Options) { o.TrustBundleFile = filepath.Join(t.TempDir(), "missing") }, message: "certify: open "},
		{name: "bundle does not parse", mod: func(o *certify.Options) {
			pkitest.File(t, filepath.Dir(o.TrustBundleFile), "bundle.pem", []byte("junk"))
		}, message: "certify: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options(t, ca, "web-token")
			tt.mod(o)
			var out bytes.Buffer
			err := certify.Run(context.Background(), o, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) || out.Len() != 0 {
				t.Fatalf("Run = %v, printed %q; want an error containing %q", err, out.String(), tt.message)
			}
			var usage *cli.UsageError
			if errors.As(err, &usage) {
				t.Fatalf("Run = %v: a usage error (exit 2) for a failure", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() *certify.Options {
		return &certify.Options{CA: "ca:8443", TrustDomain: identity.DefaultTrustDomain, TokenFile: "t", TrustBundleFile: "b", Output: "table"}
	}
	tests := []struct {
		name    string
		mod     func(*certify.Options)
		message string
	}{
		{name: "valid", mod: func(*certify.Options) {}},
		{name: "json", mod: func(o *certify.Options) { o.Output = "json" }},
		{name: "no --ca", mod: func(o *certify.Options) { o.CA = "" }, message: "--ca is required"},
		{name: "no --token-file", mod: func(o *certify.Options) { o.TokenFile = "" }, message: "--token-file is required: a service-account token for the CA's audience (kubectl create token SA --audience identity.meshid.dev)"},
		{name: "no --trust-bundle-file", mod: func(o *certify.Options) { o.TrustBundleFile = "" }, message: "--trust-bundle-file is required"},
		{name: "bad output", mod: func(o *certify.Options) { o.Output = "yaml" }, message: `-o "yaml": use table or json`},
		{name: "bad trust domain", mod: func(o *certify.Options) { o.TrustDomain = "Not Valid" }, message: `--trust-domain "Not Valid"`},
		{name: "bad --ca-id", mod: func(o *certify.Options) { o.CAID = "not an ID" }, message: `--ca-id "not an ID"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mod(o)
			clitest.WantUsage(t, "Validate", o.Validate(), tt.message)
		})
	}
}

// TestCertifyUnreachable: a CA nothing listens for is said as not
// reached (not as an answer), with the address and the flag.
func TestCertifyUnreachable(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	o := options(t, ca, "web-token")
	o.CA = "127.0.0.1:1"
	err := certify.Run(context.Background(), o, new(bytes.Buffer))
	msg := cli.Message(err)
	if !strings.HasPrefix(msg, "cannot reach meshid-ca at 127.0.0.1:1 (--ca): ") || strings.Contains(msg, "answered") || !strings.Contains(msg, "--ca 127.0.0.1:8443") {
		t.Fatalf("Message = %q; want cannot reach meshid-ca at 127.0.0.1:1 (--ca), and how to reach one", msg)
	}
}

// TestCertifyOutDirChecked: an --out-dir that does not exist, or is a
// file, is refused before the CA is asked (the CA here is unreachable, so
// a late check would fail on the dial instead), and nothing is created.
func TestCertifyOutDirChecked(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	parent := t.TempDir()
	file := pkitest.File(t, parent, "a-file", []byte("x"))
	for name, tt := range map[string]struct{ dir, message string }{
		"missing": {filepath.Join(parent, "no", "such"), "does not exist; create it"},
		"a file":  {file, "is not a folder"},
	} {
		t.Run(name, func(t *testing.T) {
			o := options(t, ca, "web-token")
			o.CA = "127.0.0.1:1"
			o.OutDir = tt.dir
			var out bytes.Buffer
			err := certify.Run(context.Background(), o, &out)
			if err == nil || !strings.Contains(err.Error(), "--out-dir "+tt.dir+" "+tt.message) || !strings.Contains(err.Error(), "nothing was written") || out.Len() != 0 {
				t.Fatalf("Run = %v, printed %q; want --out-dir %s %s", err, out.String(), tt.dir, tt.message)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(parent, "no")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("certify created %s/no: %v", parent, err)
	}
}

// TestCertifyNeverOverwrites: a second certify into the same --out-dir
// refuses before it asks the CA (no key is generated), and the files of
// the first are left as they were.
func TestCertifyNeverOverwrites(t *testing.T) {
	ca := catest.Start(t, catest.Tokens{"web-token": web})
	o := options(t, ca, "web-token")
	o.OutDir = t.TempDir()
	if err := certify.Run(context.Background(), o, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(o.OutDir, "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	o.CA = "127.0.0.1:1" // never asked: the refusal comes first
	var out bytes.Buffer
	err = certify.Run(context.Background(), o, &out)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(o.OutDir, "svid.pem")+" already exists; it is never overwritten") || out.Len() != 0 {
		t.Fatalf("Run = %v, printed %q; want a refusal of the existing files", err, out.String())
	}
	if again, _ := os.ReadFile(filepath.Join(o.OutDir, "svid.key")); !bytes.Equal(again, key) {
		t.Fatal("svid.key was replaced")
	}
	// One file is enough to refuse.
	for _, f := range []string{"svid.pem", "bundle.pem"} {
		if err := os.Remove(filepath.Join(o.OutDir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := certify.Run(context.Background(), o, &out); err == nil || !strings.Contains(err.Error(), "svid.key already exists") {
		t.Fatalf("Run = %v, want svid.key refused", err)
	}
}
