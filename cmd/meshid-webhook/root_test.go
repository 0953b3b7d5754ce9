package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
)

// TestFlags: a flag Kubernetes or meshid would refuse is a usage error
// before the webhook touches the cluster (RunE, which writes, never runs).
func TestFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{name: "token expiration 600", args: []string{"--token-expiration", "600"}, code: cli.ExitOK},
		{name: "token expiration too short", args: []string{"--token-expiration", "100"}, code: cli.ExitUsage, message: "--token-expiration 100: Kubernetes takes a projected token's lifetime from 600 to 4294967295 seconds"},
		{name: "token expiration too long", args: []string{"--token-expiration", "4294967296"}, code: cli.ExitUsage, message: "--token-expiration 4294967296"},
		{name: "bad trust domain", args: []string{"--trust-domain", "Bad Domain"}, code: cli.ExitUsage, message: "--trust-domain"},
		{name: "bad ip", args: []string{"--ip", "nope"}, code: cli.ExitUsage, message: `--ip "nope" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRootCommand()
			ran := false
			cmd.RunE = func(*cobra.Command, []string) error { ran = true; return nil }
			var out bytes.Buffer
			cmd.SetArgs(tt.args)
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			code := cli.Code(&out, cmd.ExecuteContext(context.Background()))
			if code != tt.code || !strings.Contains(out.String(), tt.message) {
				t.Fatalf("exit %d with %q; want %d containing %q", code, out.String(), tt.code, tt.message)
			}
			if ran != (tt.code == cli.ExitOK) {
				t.Fatalf("RunE ran: %v; want it to run only when the flags are good", ran)
			}
		})
	}
}
