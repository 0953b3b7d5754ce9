package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/ports"
)

const audience = identity.DefaultAudience

var trustDomain = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// caProcess is a meshid-ca process with its own namespace, anchor, issuer
// Secret and trust bundle ConfigMap.
type caProcess struct {
	*process
	ns     string
	anchor *issuer.KeyPair
	issuer *issuer.KeyPair
	addr   string
	client identityv1.IdentityClient
	bundle *bundle.Bundle
}

// newAnchor is a trust anchor named name, valid from now for a year.
func newAnchor(t *testing.T, name string) *issuer.KeyPair {
	t.Helper()
	return issuertest.Anchor(t, issuertest.Name(name))
}

// newIssuer is an issuer of anchor named name, valid from now for 48 h,
// with path length zero as meshid's issuers have.
func newIssuer(t *testing.T, anchor *issuer.KeyPair, name string) *issuer.KeyPair {
	t.Helper()
	return issuertest.Intermediate(t, anchor, issuertest.Name(name), issuertest.PathLenZero())
}

func issuerSecret(t *testing.T, kp *issuer.KeyPair) *corev1.Secret {
	t.Helper()
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "meshid-issuer"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": kp.CertPEM(), "tls.key": key},
	}
}

func bundleConfigMap(pem []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "meshid-trust-bundle"},
		Data:       map[string]string{"ca-bundle.crt": string(pem)},
	}
}

// freeAddr is a free address on loopback for a process to listen on.
func freeAddr(t *testing.T) string { return ports.Addr(t) }

// startCA starts meshid-ca in a new namespace and waits until it is ready.
func startCA(t *testing.T, extraArgs ...string) *caProcess {
	t.Helper()
	anchor := newAnchor(t, "e2e anchor")
	return startCAWith(t, anchor, newIssuer(t, anchor, "e2e issuer"), extraArgs...)
}

// startCAWith is startCA with the given anchor and issuer.
func startCAWith(t *testing.T, anchor, iss *issuer.KeyPair, extraArgs ...string) *caProcess {
	t.Helper()
	e := need(t)
	ctx := context.Background()
	p := &caProcess{ns: namespace(t, "meshid"), anchor: anchor, issuer: iss}
	if _, err := e.client.CoreV1().Secrets(p.ns).Create(ctx, issuerSecret(t, p.issuer), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CoreV1().ConfigMaps(p.ns).Create(ctx, bundleConfigMap(p.anchor.CertPEM()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.addr, p.process = runCA(t, p.ns, extraArgs...)
	var err error
	p.bundle, err = bundle.Parse(p.anchor.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := rotation.DialCA(p.addr, p.bundle.X509Bundle(trustDomain), p.id(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client = identityv1.NewIdentityClient(conn)
	return p
}

// runCA starts one meshid-ca replica for the trust objects in ns and
// returns its gRPC address.
func runCA(t *testing.T, ns string, extraArgs ...string) (string, *process) {
	t.Helper()
	return runCAAt(t, ns, freeAddr(t), extraArgs...)
}

// runCAAt is runCA listening on addr.
func runCAAt(t *testing.T, ns, addr string, extraArgs ...string) (string, *process) {
	t.Helper()
	admin := freeAddr(t)
	args := append([]string{
		"--kubeconfig", need(t).cluster.Kubeconfig, "--namespace", ns,
		"--issuer-secret", "meshid-issuer", "--trust-bundle", "meshid-trust-bundle",
		"--listen", addr, "--admin-listen", admin,
	}, extraArgs...)
	return addr, startProcess(t, "meshid-ca", admin, args...)
}

// id is the CA's own SPIFFE ID.
func (p *caProcess) id(t *testing.T) spiffeid.ID {
	return spiffeid.RequireFromSegments(trustDomain, "ns", p.ns, "sa", "meshid-ca")
}

// process is a meshid binary started by a test, stopped (SIGTERM, which
// must end it cleanly) when the test ends; its log is printed if the test
// failed.
type process struct {
	name    string
	admin   string
	logPath string
	pid     int
	stop    func() error  // SIGTERM, and wait
	exited  chan struct{} // closed when it has exited
	exitErr error
}

// startProcess runs the named binary and waits until its admin endpoint
// answers /ready.
func startProcess(t *testing.T, name, admin string, args ...string) *process {
	t.Helper()
	p, exited := spawn(t, name, args...)
	p.admin = admin
	if err := waitHTTP(fmt.Sprintf("http://%s/ready", admin), exited, 30*time.Second); err != nil {
		t.Fatalf("%s not ready: %v\n%s", name, err, p.logs(t))
	}
	return p
}

// spawn runs the named binary (from the built meshid binaries) until the
// test ends or stop is called; the channel reports its exit.
func spawn(t *testing.T, name string, args ...string) (*process, <-chan error) {
	t.Helper()
	p := &process{name: name, logPath: filepath.Join(t.TempDir(), name+".log")}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(need(t).bin, name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	p.exited = make(chan struct{})
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.exitErr = err
		close(p.exited)
		exited <- err
	}()
	p.stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGCONT) // in case a test froze it
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			return p.exitErr
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("%s did not stop within 15 s of SIGTERM", name)
		}
	}
	t.Cleanup(func() {
		select {
		case <-p.exited: // stopped by the test
		default:
			if err := p.stop(); err != nil {
				t.Errorf("%s did not stop cleanly on SIGTERM: %v", name, err)
			}
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs(t))
		}
	})
	return p, exited
}

func (p *process) logs(t *testing.T) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Logf("read %s log: %v", p.name, err)
	}
	return string(b)
}

// metric returns the value of the sample whose line starts with series,
// e.g. `meshid_ca_certificates_refused_total{reason="csr_name_mismatch"}`,
// or 0 when there is none.
func (p *process) metric(t *testing.T, series string) float64 {
	t.Helper()
	return metricAt(t, http.DefaultClient, "http://"+p.admin, series)
}

// metricAt is metric from the admin endpoint at base, through client.
func metricAt(t *testing.T, client *http.Client, base, series string) float64 {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// waitHTTP polls url until it answers 200, the process exits, or timeout.
func waitHTTP(url string, exited <-chan error, timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
		select {
		case err := <-exited:
			return fmt.Errorf("process exited: %v", err)
		case <-deadline:
			return fmt.Errorf("%s after %s (last: %s)", url, timeout, last)
		case <-tick.C:
		}
	}
}

// eventually polls cond until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("after %s: %v", timeout, err)
		case <-tick.C:
		}
	}
}
