package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
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
		t.Run(tt.name, func(t *testing.T) {
			var ran *options
			cmd := newRootCommand(func(_ context.Context, o *options, _ *cobra.Command) error { ran = o; return nil })
			var stderr bytes.Buffer
			cmd.SetArgs(tt.args)
			cmd.SetOut(&stderr)
			cmd.SetErr(&stderr)
			code := cli.Code(&stderr, cmd.ExecuteContext(context.Background()))
			if code != tt.code || !strings.Contains(stderr.String(), tt.message) {
				t.Fatalf("exit %d with %q; want %d containing %q", code, stderr.String(), tt.code, tt.message)
			}
			if (code == cli.ExitOK) != (ran != nil) {
				t.Fatalf("run called: %v, exit %d", ran != nil, code)
			}
		})
	}
}
