package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.step.sm/crypto/jose"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/issuer/issuertest"
)

// hsmKey is a well-formed --issuer-key; the flag tests never open it.
const hsmKey = "pkcs11:token=meshid;id=01;object=issuer?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin"

func TestFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{name: "secret and bundle", args: []string{"--issuer-secret", "i", "--trust-bundle", "b"}, code: cli.ExitOK},
		{name: "files", args: []string{"--issuer-cert-file", "c", "--issuer-key-file", "k", "--trust-bundle-file", "b"}, code: cli.ExitOK},
		{name: "no issuer", args: []string{"--trust-bundle", "b"}, code: cli.ExitUsage, message: "an issuer is required"},
		{name: "issuer twice", args: []string{"--issuer-secret", "i", "--issuer-cert-file", "c", "--issuer-key-file", "k", "--trust-bundle", "b"}, code: cli.ExitUsage, message: "not both"},
		{name: "cert without key", args: []string{"--issuer-cert-file", "c", "--trust-bundle", "b"}, code: cli.ExitUsage, message: "go together"},
		{name: "no bundle", args: []string{"--issuer-secret", "i"}, code: cli.ExitUsage, message: "a trust bundle is required"},
		{name: "reserved service accounts", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--reserved-service-accounts", "meshid/meshid-webhook,vault/vault"}, code: cli.ExitOK},
		{name: "reserved without namespace", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--reserved-service-accounts", "meshid-webhook"}, code: cli.ExitUsage, message: "NAMESPACE/NAME"},
		{name: "reserved bad name", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--reserved-service-accounts", "meshid/Bad_Name"}, code: cli.ExitUsage, message: "--reserved-service-accounts meshid/Bad_Name"},
		{name: "bad trust domain", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--trust-domain", "Not Valid"}, code: cli.ExitUsage, message: "--trust-domain"},
		{name: "federation spiffe", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--federation-listen", ":8444"}, code: cli.ExitOK},
		{name: "federation web without files", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--federation-listen", ":8444", "--federation-profile", "https_web"}, code: cli.ExitUsage, message: "needs --federation-cert-file"},
		{name: "federation profile unknown", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--federation-listen", ":8444", "--federation-profile", "http"}, code: cli.ExitUsage, message: "not https_spiffe or https_web"},
		{name: "issuer key with the certificate", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--issuer-key", hsmKey}, code: cli.ExitOK},
		{name: "issuer key with a key file", args: []string{"--issuer-cert-file", "c", "--issuer-key-file", "k", "--trust-bundle", "b", "--issuer-key", hsmKey}, code: cli.ExitUsage, message: "drop --issuer-key-file"},
		{name: "issuer key without a certificate", args: []string{"--trust-bundle", "b", "--issuer-key", hsmKey}, code: cli.ExitUsage, message: "needs the issuer certificate"},
		{name: "issuer key with a PIN", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--issuer-key", "pkcs11:token=t;id=01;object=o?pin-value=1234"}, code: cli.ExitUsage, message: "pin-value"},
		{name: "unknown flag", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--bogus"}, code: cli.ExitUsage, message: "unknown flag"},
		{name: "positional argument", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "extra"}, code: cli.ExitUsage, message: "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runFlags(t, tt.args, tt.code, tt.message) })
	}
}

// runFlags runs meshid-ca with args (run replaced) and checks its exit
// code and that its output holds message; it returns that output.
func runFlags(t *testing.T, args []string, want int, message string) string {
	t.Helper()
	var ran *options
	cmd := newRootCommand(func(_ context.Context, o *options, _ *cobra.Command) error { ran = o; return nil })
	var stderr bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&stderr)
	cmd.SetErr(&stderr)
	code := cli.Code(&stderr, cmd.ExecuteContext(context.Background()))
	if code != want || !strings.Contains(stderr.String(), message) {
		t.Fatalf("exit %d with %q; want %d containing %q", code, stderr.String(), want, message)
	}
	if (code == cli.ExitOK) != (ran != nil) {
		t.Fatalf("run called: %v, exit %d", ran != nil, code)
	}
	return stderr.String()
}

func TestStepCAFlags(t *testing.T) {
	dir := t.TempDir()
	root := issuertest.Anchor(t, issuertest.Name("step-ca root"))
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "kid-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := json.Marshal(jwk)
	pub, _ := json.Marshal(jwk.Public())
	var d struct{ D string }
	if err := json.Unmarshal(priv, &d); err != nil || d.D == "" {
		t.Fatalf("the private JWK has no d: %v", err)
	}
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile, keyFile, pubFile, junk := file("root.crt", root.CertPEM()), file("key.json", priv), file("pub.json", pub), file("junk", []byte("secret-bytes-never-echoed"))
	stepCA := func(key string, more ...string) []string {
		return append([]string{"--trust-bundle", "b", "--issuer-source", "step-ca", "--step-ca-url", "https://step-ca.pki:9000",
			"--step-ca-root", rootFile, "--step-ca-provisioner", "meshid", "--step-ca-provisioner-key", key}, more...)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{name: "step-ca", args: stepCA(keyFile), code: cli.ExitOK},
		{name: "step-ca with a memory key", args: stepCA(keyFile, "--issuer-key", "memory", "--issuer-ttl", "3m"), code: cli.ExitOK},
		{name: "step-ca with an HSM key", args: stepCA(keyFile, "--issuer-key", hsmKey), code: cli.ExitOK},
		{name: "step-ca and a Secret", args: stepCA(keyFile, "--issuer-secret", "i"), code: cli.ExitUsage, message: "drop --issuer-secret"},
		{name: "step-ca missing flags", args: []string{"--trust-bundle", "b", "--issuer-source", "step-ca", "--step-ca-url", "https://x:9000"}, code: cli.ExitUsage, message: "missing --step-ca-root, --step-ca-provisioner, --step-ca-provisioner-key"},
		{name: "step-ca flags with the secret source", args: []string{"--issuer-secret", "i", "--trust-bundle", "b", "--step-ca-url", "https://x:9000"}, code: cli.ExitUsage, message: "need --issuer-source step-ca"},
		{name: "unknown source", args: []string{"--trust-bundle", "b", "--issuer-source", "vault"}, code: cli.ExitUsage, message: "use secret or step-ca"},
		{name: "plain http", args: append(stepCA(keyFile), "--step-ca-url", "http://x:9000"), code: cli.ExitUsage, message: "must be https://HOST:PORT"},
		{name: "key not a JWK", args: stepCA(junk), code: cli.ExitUsage, message: "not a private JWK"},
		{name: "public key", args: stepCA(pubFile), code: cli.ExitUsage, message: "must be the private JWK"},
		{name: "no key file", args: stepCA(filepath.Join(dir, "absent")), code: cli.ExitUsage, message: "--step-ca-provisioner-key"},
		{name: "root not PEM", args: append(stepCA(keyFile), "--step-ca-root", junk), code: cli.ExitUsage, message: "--step-ca-root must hold"},
		{name: "negative TTL", args: stepCA(keyFile, "--issuer-ttl", "-1h"), code: cli.ExitUsage, message: "--issuer-ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runFlags(t, tt.args, tt.code, tt.message)
			if strings.Contains(out, "secret-bytes-never-echoed") || strings.Contains(out, d.D) {
				t.Fatal("a key file's content was printed")
			}
		})
	}
}

// TestManifestStepCAArgs: the flags meshid install renders for step-ca are
// meshid-ca's.
func TestManifestStepCAArgs(t *testing.T) {
	cmd := newRootCommand(func(context.Context, *options, *cobra.Command) error { return nil })
	args := manifest.Args(manifest.Options{Namespace: "mesh", StepCA: &manifest.StepCA{URL: "https://step-ca.pki:9000", Provisioner: "meshid", KeySecret: "k", IssuerTTL: 24 * time.Hour}})
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("meshid-ca %v: %v", args, err)
	}
	fs := cmd.Flags()
	for flag, want := range map[string]string{"issuer-source": "step-ca", "step-ca-url": "https://step-ca.pki:9000", "step-ca-provisioner": "meshid", "issuer-ttl": "24h0m0s", "issuer-secret": ""} {
		if v, _ := fs.GetString(flag); flag != "issuer-ttl" && v != want {
			t.Errorf("--%s = %q, want %q", flag, v, want)
		}
		if d, _ := fs.GetDuration(flag); flag == "issuer-ttl" && d.String() != want {
			t.Errorf("--%s = %s, want %s", flag, d, want)
		}
	}
}
