package kube_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

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

// clusterAt writes a kubeconfig for server, in a folder with a space.
func clusterAt(t *testing.T, server string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my clusters")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kubeconfig")
	cfg := strings.ReplaceAll(kubeconfig, "https://127.0.0.1:6443", server)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHint: an API server that cannot be reached gets check's next step,
// for the kubeconfig and context used (quoted for the shell); an error of
// a server that answered, and any other error, are left as they are.
func TestHint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	path := clusterAt(t, "https://"+closed)
	c, err := kube.NewClients(kube.Target{Kubeconfig: path, Context: "dev"}, "meshid-test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Kube.CoreV1().Namespaces().Get(context.Background(), "meshid", metav1.GetOptions{})
	hinted := kube.Hint(fmt.Errorf("install: read it: %w", err))
	want := "connection refused. Is the API server up, and is this the cluster you mean? `kubectl --kubeconfig '" + path + "' --context dev cluster-info` tells"
	if hinted == nil || !strings.HasSuffix(hinted.Error(), want) || !errors.Is(hinted, syscall.ECONNREFUSED) {
		t.Fatalf("Hint = %v, want it to end %q and still be ECONNREFUSED", hinted, want)
	}
	if _, err := c.Mapper.RESTMapping(schema.GroupKind{Kind: "Namespace"}, "v1"); !strings.Contains(fmt.Sprint(kube.Hint(err)), "cluster-info` tells") {
		t.Fatalf("discovery: Hint = %v, want the hint", kube.Hint(err))
	}

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"namespaces \"meshid\" is forbidden"}`)
	}))
	defer srv.Close()
	cfg := strings.ReplaceAll(kubeconfig, `{server: "https://127.0.0.1:6443"}`, `{server: "`+srv.URL+`", insecure-skip-tls-verify: true}`)
	answered := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(answered, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = kube.NewClients(kube.Target{Kubeconfig: answered}, "meshid-test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Kube.CoreV1().Namespaces().Get(context.Background(), "meshid", metav1.GetOptions{})
	if !apierrors.IsForbidden(err) || kube.Hint(err) != err {
		t.Fatalf("a server that answered 403: %v, Hint %v; want it as it is", err, kube.Hint(err))
	}
	other := errors.New("install: --anchor-cert a.crt: not a CA")
	if kube.Hint(other) != other || kube.Hint(nil) != nil {
		t.Fatal("Hint changed an error that is not the API server's transport's")
	}
}

// TestNoKubeconfig: with no kubeconfig (and not in a pod) the error says
// what to pass, and not client-go's KUBERNETES_MASTER; a kubeconfig that
// does not load is named, with why.
func TestNoKubeconfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", filepath.Join(dir, "none"))
	_, err := kube.NewClients(kube.Target{}, "meshid-test")
	if err == nil || err.Error() != kube.NoCluster || strings.Contains(err.Error(), "KUBERNETES_MASTER") {
		t.Fatalf("no kubeconfig: %v, want %q", err, kube.NoCluster)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("clusters: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", bad)
	if _, err := kube.NewClients(kube.Target{}, "meshid-test"); err == nil || !strings.HasPrefix(err.Error(), "kubeconfig ($KUBECONFIG or ~/.kube/config): error loading config file \""+bad+"\"") {
		t.Fatalf("a kubeconfig that does not load: %v", err)
	}
}
