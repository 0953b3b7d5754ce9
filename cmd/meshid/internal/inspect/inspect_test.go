package inspect_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
				`^Certificate 1\s+CN=issuer,O=meshid$`, `^  CA\s+true$`,
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
		{name: "a key", file: pkitest.File(t, dir, "key.pem", pkitest.KeyPEM(t, key)), problem: `block 1 is "PRIVATE KEY"; inspect reads certificates only`},
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
