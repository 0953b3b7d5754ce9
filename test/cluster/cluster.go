package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshid/meshid/test/ports"
)

// Config configures a control plane.
type Config struct {
	// BinDir holds etcd, kube-apiserver and kube-controller-manager.
	// Required: test/controlplane/install.sh prints it.
	BinDir string
	// Dir holds the state, PKI, kubeconfig and logs; it is created.
	// Required.
	Dir string
	// ControllerManager also starts kube-controller-manager (namespace
	// deletion, default service accounts, garbage collection).
	ControllerManager bool
	// ReadyTimeout bounds the wait for /readyz; 0 means 90 s.
	ReadyTimeout time.Duration
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir is the state folder.
	Dir string
	// Kubeconfig is the admin kubeconfig (system:masters).
	Kubeconfig string
	// Server is the API server's URL.
	Server string
	// RESTConfig is the admin client configuration.
	RESTConfig *rest.Config

	procs []*process
	cfg   Config
}

type process struct {
	name string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts the control plane and returns once the API server is ready.
// On error everything it started is stopped.
func Start(ctx context.Context, cfg Config) (c *Cluster, err error) {
	if cfg.BinDir == "" || cfg.Dir == "" {
		return nil, errors.New("cluster: Config.BinDir and Config.Dir are required (run test/controlplane/install.sh for the binaries)")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("cluster: %s is missing from %s: run test/controlplane/install.sh", b, cfg.BinDir)
		}
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 90 * time.Second
	}
	for _, d := range []string{"pki", "etcd", "logs", "apiserver"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	p, err := newPKI(filepath.Join(cfg.Dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]

	c = &Cluster{Dir: cfg.Dir, Server: "https://127.0.0.1:" + strconv.Itoa(apiPort), cfg: cfg}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	if err := c.start(cfg, "etcd",
		"--name=meshid-test", "--data-dir="+filepath.Join(cfg.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=meshid-test="+peerURL, "--unsafe-no-fsync=true", "--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := c.start(cfg, "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+p.servingCrt, "--tls-private-key-file="+p.servingKey,
		"--client-ca-file="+p.caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--authorization-mode=RBAC", "--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir="+filepath.Join(cfg.Dir, "apiserver"),
		"--allow-privileged=true", "--v=0",
	); err != nil {
		return nil, err
	}

	c.RESTConfig = &rest.Config{
		Host:            c.Server,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: p.adminCert, KeyData: p.adminKey},
		QPS:             200, Burst: 400,
	}
	c.Kubeconfig = filepath.Join(cfg.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Server, p); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, cfg.ReadyTimeout); err != nil {
		return nil, err
	}
	if cfg.ControllerManager {
		if err := c.start(cfg, "kube-controller-manager",
			"--kubeconfig="+c.Kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
			"--service-account-private-key-file="+p.saKey, "--root-ca-file="+p.caFile,
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
			"--controllers=serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller",
		); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Client returns an admin clientset.
func (c *Cluster) Client() (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(c.RESTConfig)
}

func (c *Cluster) start(cfg Config, name string, args ...string) error {
	logPath := filepath.Join(cfg.Dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cmd := exec.Command(filepath.Join(cfg.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Die with the process that started us, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("cluster: start %s: %w", name, err)
	}
	pr := &process{name: name, args: args, cmd: cmd, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		logFile.Close()
		close(pr.done)
	}()
	c.procs = append(c.procs, pr)
	return nil
}

func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	transport, err := rest.TransportFor(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	hc := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range c.procs {
			select {
			case <-p.done:
				return fmt.Errorf("cluster: %s exited early (%v); see %s", p.name, p.err, filepath.Join(c.Dir, "logs", p.name+".log"))
			default:
			}
		}
		resp, err := hc.Get(c.Server + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: kube-apiserver not ready after %s; see %s", timeout, filepath.Join(c.Dir, "logs"))
		case <-tick.C:
		}
	}
}

// StopAPIServer stops kube-apiserver alone (etcd keeps the data), to test
// how clients live through an outage.
func (c *Cluster) StopAPIServer() error {
	for i, p := range c.procs {
		if p.name != "kube-apiserver" {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		c.procs = append(c.procs[:i], c.procs[i+1:]...)
		return nil
	}
	return errors.New("cluster: kube-apiserver is not running")
}

// StartAPIServer starts kube-apiserver again with the flags it had, and
// waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context, args []string) error {
	if err := c.start(c.cfg, "kube-apiserver", args...); err != nil {
		return err
	}
	return c.waitReady(ctx, c.cfg.ReadyTimeout)
}

// APIServerArgs returns the flags kube-apiserver runs with.
func (c *Cluster) APIServerArgs() []string {
	for _, p := range c.procs {
		if p.name == "kube-apiserver" {
			return p.args
		}
	}
	return nil
}

// Stop stops every process, last started first: SIGTERM, then SIGKILL after
// 10 s. It is safe to call more than once.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = nil
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["meshid-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCert, ClientKeyData: p.adminKey}
	cfg.Contexts["meshid-test"] = &clientcmdapi.Context{Cluster: "meshid-test", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "meshid-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("cluster: kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) { return ports.Free(n) }
