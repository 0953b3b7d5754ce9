package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
)

// TestOutboundFlag: an --outbound target that is not HOST:PORT is a usage
// error at start-up, before the proxy runs.
func TestOutboundFlag(t *testing.T) {
	tests := []struct {
		name, outbound string
		code           int
		message        string
	}{
		{name: "host and port", outbound: "127.0.0.1:0=db.shop.svc:8443,id=spiffe://cluster.local/ns/shop/sa/db", code: cli.ExitOK},
		{name: "IPv6 target", outbound: "127.0.0.1:0=[fd00::1]:8443", code: cli.ExitOK},
		{name: "no port", outbound: "127.0.0.1:0=db", code: cli.ExitUsage, message: `--outbound "127.0.0.1:0=db": target "db": want HOST:PORT`},
		{name: "empty port", outbound: "127.0.0.1:0=db:", code: cli.ExitUsage, message: `target "db:": want HOST:PORT`},
		{name: "no host", outbound: "127.0.0.1:0=:8443", code: cli.ExitUsage, message: `target ":8443": want HOST:PORT`},
		{name: "no target", outbound: "127.0.0.1:0=,id=spiffe://cluster.local/ns/shop/sa/db", code: cli.ExitUsage, message: `target "": want HOST:PORT`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := false
			cmd := newRootCommand(func(context.Context, *options, *cobra.Command) error { ran = true; return nil })
			var out bytes.Buffer
			cmd.SetArgs([]string{"--ca", "127.0.0.1:1", "--outbound", tt.outbound})
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			code := cli.Code(&out, cmd.ExecuteContext(context.Background()))
			if code != tt.code || !strings.Contains(out.String(), tt.message) {
				t.Fatalf("exit %d with %q; want %d containing %q", code, out.String(), tt.code, tt.message)
			}
			if ran != (tt.code == cli.ExitOK) {
				t.Fatalf("run called: %v; want it only when the flags are good", ran)
			}
		})
	}
}
