package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/anchor"
	"github.com/meshid/meshid/cmd/meshid/internal/certify"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/inspect"
	"github.com/meshid/meshid/cmd/meshid/internal/install"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/cmd/meshid/internal/verify"
	"github.com/meshid/meshid/identity"
)

// execute runs cmd as main does and returns the exit code and what it
// printed.
func execute(cmd *cobra.Command, args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errs)
	code = cli.Code(&errs, cmd.ExecuteContext(context.Background()))
	return code, out.String(), errs.String()
}

// fakeCluster is a kube.Connect to a fake cluster with nothing but the
// namespace meshid, that records its calls.
type fakeCluster struct{ calls []string }

func (f *fakeCluster) connect(t kube.Target, agent string) (*kube.Clients, error) {
	call := t.Kubeconfig + " " + agent
	if t.Context != "" {
		call = t.Kubeconfig + " " + t.Context + " " + agent
	}
	f.calls = append(f.calls, call)
	return &kube.Clients{Kube: fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshid"}})}, nil
}

// TestRoot drives the real commands, with a fake cluster: the exit codes
// and where the output goes.
func TestRoot(t *testing.T) {
	anchor := pkitest.CA(t, nil, "anchor", time.Now().Add(-time.Hour), 24*time.Hour)
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string // substring
		stderr string // substring; empty: nothing printed
		agent  string // the Connect call expected, if any
	}{
		{name: "check an empty cluster", args: []string{"check", "--kubeconfig", "/k"}, code: cli.ExitProblem, stdout: "Status: FAIL\n", agent: "/k meshid-check"},
		{name: "check usage", args: []string{"check", "-o", "yaml"}, code: cli.ExitUsage, stderr: `Error: -o "yaml": use table or json`},
		{name: "check arguments", args: []string{"check", "extra"}, code: cli.ExitUsage, stderr: "meshid check takes no arguments"},
		{name: "check bad flag", args: []string{"check", "--warn-within", "soon"}, code: cli.ExitUsage, stderr: "(see meshid check --help)"},
		{name: "install", args: []string{"install"}, code: cli.ExitOK, stdout: "kind: Namespace", stderr: "GENERATED A NEW TRUST ANCHOR"},
		{name: "install usage", args: []string{"install", "--replicas", "0"}, code: cli.ExitUsage, stderr: "--replicas must be at least 1"},
		{name: "rotate-anchor plan", args: []string{"rotate-anchor", "plan"}, code: cli.ExitOK, stdout: "1 Add"},
		{name: "rotate-anchor status", args: []string{"rotate-anchor", "status", "--kubeconfig", "/k"}, code: cli.ExitOK, stdout: "no rotation has been started\n", agent: "/k meshid-rotate-anchor"},
		{name: "rotate-anchor start usage", args: []string{"rotate-anchor", "start"}, code: cli.ExitUsage, stderr: "start needs a new anchor"},
		{name: "inspect standard input", args: []string{"inspect", "-"}, stdin: string(anchor.CertPEM()), code: cli.ExitOK, stdout: "Certificate 0  CN=anchor,O=meshid"},
		{name: "inspect usage", args: []string{"inspect"}, code: cli.ExitUsage, stderr: "inspect takes one FILE"},
		{name: "inspect problem", args: []string{"inspect", "-"}, stdin: "junk", code: cli.ExitProblem, stderr: "Error: standard input: no PEM CERTIFICATE block found"},
		{name: "check in a context", args: []string{"check", "--kubeconfig", "/k", "--context", "prod"}, code: cli.ExitProblem, stdout: "Status: FAIL\n", agent: "/k prod meshid-check"},
		{name: "rotate-anchor status in a context", args: []string{"rotate-anchor", "status", "--context", "prod"}, code: cli.ExitOK, stdout: "no rotation has been started\n", agent: " prod meshid-rotate-anchor"},
		{name: "rotate-anchor plan json", args: []string{"rotate-anchor", "plan", "-o", "json"}, code: cli.ExitOK, stdout: `"stage": "Add"`},
		{name: "version", args: []string{"version"}, code: cli.ExitOK, stdout: "meshid dev (commit "},
		{name: "version json", args: []string{"version", "-o", "json"}, code: cli.ExitOK, stdout: `"version": "dev"`},
		{name: "--version", args: []string{"--version"}, code: cli.ExitOK, stdout: "meshid dev (commit "},
		{name: "completion bash", args: []string{"completion", "bash"}, code: cli.ExitOK, stdout: "__start_meshid"},
		{name: "completion zsh", args: []string{"completion", "zsh"}, code: cli.ExitOK, stdout: "#compdef meshid"},
		{name: "completion fish", args: []string{"completion", "fish"}, code: cli.ExitOK, stdout: "complete -c meshid"},
		{name: "verify usage", args: []string{"verify", "127.0.0.1:1"}, code: cli.ExitUsage, stderr: "choose who to connect as"},
		{name: "certify usage", args: []string{"certify"}, code: cli.ExitUsage, stderr: "--ca is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCluster{}
			code, stdout, stderr := execute(newRootCommand(f.connect, strings.NewReader(tt.stdin)), tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || (tt.stderr == "") != (stderr == "") || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
			if want := []string{tt.agent}; tt.agent != "" && (len(f.calls) != 1 || f.calls[0] != tt.agent) || tt.agent == "" && len(f.calls) != 0 {
				t.Fatalf("Connect calls %q, want %q", f.calls, want)
			}
		})
	}
}

// TestDefaults: the flags' defaults, as each command hands them to its
// package.
func TestDefaults(t *testing.T) {
	f := &fakeCluster{}
	t.Run("check", func(t *testing.T) {
		var got *check.Options
		execute(newCheckCommand(f.connect, func(_ context.Context, o *check.Options, _ io.Writer) error { got = o; return nil }))
		if got == nil || got.Namespace != "meshid" || got.Bundle != "meshid-trust-bundle" || got.Issuer != "meshid-issuer" || got.Deployment != "meshid-ca" ||
			got.TrustDomain != identity.DefaultTrustDomain || got.WarnWithin != 60*24*time.Hour || got.IssuerWarnWithin != 0 || got.Interval != 30*time.Second || got.Output != "table" || got.Connect == nil {
			t.Fatalf("options %+v", got)
		}
	})
	t.Run("install", func(t *testing.T) {
		var got *install.Options
		execute(newInstallCommand(f.connect, func(_ context.Context, o *install.Options, _ io.Writer) error { got = o; return nil }))
		if got == nil || got.Namespace != "meshid" || got.Replicas != 2 || got.TrustDomain != identity.DefaultTrustDomain || got.Audience != identity.DefaultAudience ||
			got.LeafTTL != 24*time.Hour || !got.Webhook || got.Output != "yaml" || got.Stderr == nil || got.Connect == nil || got.Image != "ghcr.io/meshid/meshid-ca:latest" || got.ProxyImage != "ghcr.io/meshid/meshid-proxy:latest" {
			t.Fatalf("options %+v", got)
		}
	})
	t.Run("rotate-anchor", func(t *testing.T) {
		var got *anchor.Options
		var verb string
		execute(newRotateCommand(f.connect, func(_ context.Context, o *anchor.Options, v string, _ io.Writer) error { got, verb = o, v; return nil }), "start", "--generate", "--write-anchor-key", "k", "-n", "other")
		if got == nil || verb != anchor.Start || got.Namespace != "other" || got.StageTimeout != 10*time.Minute || got.ReissueWindow != 30*time.Second || !got.Generate || got.WriteAnchorKey != "k" || got.Connect == nil {
			t.Fatalf("verb %q, options %+v", verb, got)
		}
	})
	t.Run("verify", func(t *testing.T) {
		var got *verify.Options
		var addr string
		execute(newVerifyCommand(f.connect, func(_ context.Context, o *verify.Options, a string, _ io.Writer) error { got, addr = o, a; return nil }), "db:8443", "--as", "shop/web")
		if got == nil || addr != "db:8443" || got.CA != "meshid-ca.meshid.svc:8443" || got.Audience != identity.DefaultAudience || got.TrustDomain != identity.DefaultTrustDomain ||
			got.BundleName != "meshid-trust-bundle" || got.Timeout != 15*time.Second || got.Connect == nil {
			t.Fatalf("addr %q, options %+v", addr, got)
		}
	})
	t.Run("certify", func(t *testing.T) {
		var got *certify.Options
		execute(newCertifyCommand(func(_ context.Context, o *certify.Options, _ io.Writer) error { got = o; return nil }), "--ca", "ca:8443", "--token-file", "t", "--trust-bundle-file", "b")
		if got == nil || got.TrustDomain != identity.DefaultTrustDomain || got.Timeout != 30*time.Second || got.Output != "table" {
			t.Fatalf("options %+v", got)
		}
	})
	t.Run("inspect", func(t *testing.T) {
		var got *inspect.Options
		var file string
		stdin := strings.NewReader("")
		execute(newInspectCommand(stdin, func(_ context.Context, o *inspect.Options, fl string, _ io.Writer) error {
			got, file = o, fl
			return nil
		}), "-")
		if got == nil || file != "-" || got.Output != "table" || got.Stdin != stdin {
			t.Fatalf("file %q, options %+v", file, got)
		}
	})
	if len(f.calls) != 0 {
		t.Fatalf("Connect called by the commands themselves: %q", f.calls)
	}
}

// TestErrorsWithoutPrefixes: what a failing command prints names the
// problem, never the package it came from.
func TestErrorsWithoutPrefixes(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "anchor.key")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	prefix := regexp.MustCompile(`(^Error: |: )(anchor|rotation|certify|install|inspect|verify|issuer|bundle|check): `)
	for _, args := range [][]string{
		{"rotate-anchor", "resume"},
		{"rotate-anchor", "abort", "--force"},
		{"rotate-anchor", "start", "--generate", "--write-anchor-key", key},
		{"install", "--write-anchor-key", key},
		{"inspect", filepath.Join(dir, "missing.pem")},
		{"certify", "--ca", "127.0.0.1:1", "--token-file", filepath.Join(dir, "token"), "--trust-bundle-file", key},
		{"verify", "127.0.0.1:1", "--cert", key, "--key", key, "--trust-bundle-file", key},
	} {
		f := &fakeCluster{}
		code, _, stderr := execute(newRootCommand(f.connect, strings.NewReader("")), args...)
		if code != cli.ExitProblem || !strings.HasPrefix(stderr, "Error: ") || prefix.MatchString(stderr) {
			t.Errorf("%q: exit %d, %q; want exit 1 and no package prefix", args, code, stderr)
		}
	}
}
