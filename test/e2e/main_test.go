// Package e2e_test drives meshid's real binaries against a real
// kube-apiserver and etcd, started once for the package by TestMain.
package e2e_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/meshid/meshid/test/cluster"
)

// env is what TestMain set up; nil under -short.
var env *environment

type environment struct {
	cluster *cluster.Cluster
	client  kubernetes.Interface
	bin     string // built meshid binaries
	cpBin   string // control-plane binaries (kubectl)
	tmp     string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "meshid-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)

	binDir, err := cluster.Binaries(ctx)
	if err != nil {
		return 0, err
	}
	bin := filepath.Join(tmp, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "github.com/meshid/meshid/cmd/meshid-ca", "github.com/meshid/meshid/cmd/meshid", "github.com/meshid/meshid/cmd/meshid-proxy", "github.com/meshid/meshid/cmd/meshid-webhook", "github.com/meshid/meshid/cmd/meshid-init", "github.com/meshid/meshid/test/cmd/hello", "github.com/meshid/meshid/test/cmd/cert-manager-controller")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build meshid: %w", err)
	}
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Config{BinDir: binDir, Dir: filepath.Join(tmp, "cluster")})
	if err != nil {
		return 0, err
	}
	defer c.Stop()
	fmt.Fprintf(os.Stderr, "e2e: control plane at %s ready in %s\n", c.Server, time.Since(start).Round(time.Millisecond))
	client, err := c.Client()
	if err != nil {
		return 0, err
	}
	env = &environment{cluster: c, client: client, bin: bin, cpBin: binDir, tmp: tmp}
	return m.Run(), nil
}

// need skips t under -short, where no control plane runs.
func need(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		t.Skip("e2e: needs the control plane; not started under -short")
	}
	return env
}
