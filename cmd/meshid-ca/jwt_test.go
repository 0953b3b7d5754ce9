package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
)

func TestJWTFlags(t *testing.T) {
	base := []string{"--issuer-secret", "i", "--trust-bundle", "b"}
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{name: "jwt on", args: []string{"--jwt-key-secret", "meshid-jwt-keys"}, code: cli.ExitOK},
		{name: "oidc", args: []string{"--jwt-key-secret", "k", "--oidc-issuer", "https://oidc.example.com", "--oidc-listen", ":8445"}, code: cli.ExitOK},
		{name: "ttl without secret", args: []string{"--jwt-ttl-max", "10m"}, code: cli.ExitUsage, message: "need --jwt-key-secret"},
		{name: "issuer without secret", args: []string{"--oidc-issuer", "https://oidc.example.com"}, code: cli.ExitUsage, message: "need --jwt-key-secret"},
		{name: "listen without issuer", args: []string{"--jwt-key-secret", "k", "--oidc-listen", ":8445"}, code: cli.ExitUsage, message: "--oidc-listen needs --oidc-issuer"},
		{name: "http issuer", args: []string{"--jwt-key-secret", "k", "--oidc-issuer", "http://oidc.example.com"}, code: cli.ExitUsage, message: "must use https"},
		{name: "issuer with slash", args: []string{"--jwt-key-secret", "k", "--oidc-issuer", "https://oidc.example.com/"}, code: cli.ExitUsage, message: "must not end in /"},
		{name: "ttl too short", args: []string{"--jwt-key-secret", "k", "--jwt-ttl-max", "30s"}, code: cli.ExitUsage, message: "under a minute"},
		{name: "lead over lifetime", args: []string{"--jwt-key-secret", "k", "--jwt-key-lifetime", "1h", "--jwt-key-publish-lead", "2h"}, code: cli.ExitUsage, message: "must be shorter than a key's lifetime"},
		{name: "negative", args: []string{"--jwt-key-secret", "k", "--jwt-ttl-max", "-1m"}, code: cli.ExitUsage, message: "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran *options
			cmd := newRootCommand(func(_ context.Context, o *options, _ *cobra.Command) error { ran = o; return nil })
			var stderr bytes.Buffer
			cmd.SetArgs(append(append([]string{}, base...), tt.args...))
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
