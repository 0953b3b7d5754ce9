package kube_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/meshid/meshid/cmd/internal/kube"
)

const kubeconfig = `apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster: {server: "https://127.0.0.1:6443"}
- name: prod
  cluster: {server: "https://127.0.0.2:6443"}
users:
- name: admin
  user: {token: t}
contexts:
- name: dev
  context: {cluster: dev, user: admin}
- name: prod
  context: {cluster: prod, user: admin}
`

// TestTarget: --context picks the kubeconfig's context, as kubectl's
// does; the current context otherwise; an unknown one is an error that
// says how to list them.
func TestTarget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		host string
		err  string
	}{
		{args: []string{"--kubeconfig", path}, host: "https://127.0.0.1:6443"},
		{args: []string{"--kubeconfig", path, "--context", "prod"}, host: "https://127.0.0.2:6443"},
		{args: []string{"--kubeconfig", path, "--context", "staging"}, err: `context "staging"`},
	} {
		var target kube.Target
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		target.AddFlags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		c, err := kube.NewClients(target, "meshid-test")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "kubectl config get-contexts") {
				t.Fatalf("%q: %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Kube.Discovery().RESTClient().Get().URL().Host; "https://"+got != tt.host {
			t.Fatalf("%q: server %s, want %s", tt.args, got, tt.host)
		}
	}
}
