package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/meshid/meshid/cmd/internal/cli"
)

// TestFlags: bad flags are usage errors that change nothing; --dry-run
// prints the rule set the flags ask for and programs nothing.
func TestFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{name: "dry run", args: []string{"--dry-run", "--skip-inbound-ports", "9100", "--skip-outbound-cidrs", "169.254.169.254"},
			code: cli.ExitOK, message: "prerouting: tcp dport 9100 return\nprerouting: tcp dport 15000 return\nprerouting: meta l4proto tcp redirect to :15006\noutput: oifname \"lo\" return\noutput: meta skuid 65532 return\noutput: ip daddr 169.254.169.254/32 return\noutput: meta l4proto tcp redirect to :15001\n"},
		{name: "dry run remove", args: []string{"--dry-run", "--remove", "--state-file", "/nonexistent/state.json"},
			code: cli.ExitOK, message: "would remove table inet meshid\nwould remove /nonexistent/state.json\n"},
		{name: "bad port", args: []string{"--dry-run", "--skip-inbound-ports", "http"}, code: cli.ExitUsage, message: "--skip-inbound-ports"},
		{name: "port out of range", args: []string{"--dry-run", "--skip-outbound-ports", "70000"}, code: cli.ExitUsage, message: "--skip-outbound-ports"},
		{name: "bad CIDR", args: []string{"--dry-run", "--skip-outbound-cidrs", "10.0.0.0/40"}, code: cli.ExitUsage, message: "--skip-outbound-cidrs"},
		{name: "ports clash", args: []string{"--dry-run", "--inbound-port", "15000"}, code: cli.ExitUsage, message: "must differ"},
		{name: "positional argument", args: []string{"--dry-run", "extra"}, code: cli.ExitUsage, message: "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRootCommand(run)
			var out bytes.Buffer
			cmd.SetArgs(tt.args)
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			code := cli.Code(&out, cmd.ExecuteContext(context.Background()))
			if code != tt.code || !strings.Contains(out.String(), tt.message) {
				t.Fatalf("exit %d with %q; want %d containing %q", code, out.String(), tt.code, tt.message)
			}
		})
	}
}
