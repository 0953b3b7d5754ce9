package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// SPIRETrustDomain is the trust domain StartSPIRE configures; the SPIFFE ID
// in a CSR given to Mint must belong to it.
const SPIRETrustDomain = "bench.local"

// SPIRE is a running SPIRE server, pinned to CPUs, with its admin API on a unix socket.
type SPIRE struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
	conn    *grpc.ClientConn
	client  svidv1.SVIDClient
	sockDir string // a short temp folder holding the socket, removed by Stop; "" if the socket is under dir
	logPath string

	stopOnce sync.Once
	stopErr  error
}

// StartSPIRE runs bin (the spire-server binary) with a fresh config and data dir under dir,
// trust domain "bench.local", an in-memory key manager, sqlite datastore in dir, no upstream authority (self-signed CA),
// ca_ttl 24h, default_x509_svid_ttl 1h; under `taskset -c cpus` when cpus != "" and with GOMAXPROCS=gomaxprocs when > 0.
// It waits (polling, no fixed sleeps) until the server's admin API answers (e.g. a first MintX509SVID or the bundle API), or ctx ends.
// Its stdout/stderr go to dir/spire-server.log.
//
// The admin API is the server's local unix socket (socket_path); SPIRE
// authorizes MintX509SVID for any caller on it, so no admin ID or agent is
// needed. The server also needs a TCP listener for agents (bind_address and
// bind_port are mandatory); it gets a free port on 127.0.0.1.
func StartSPIRE(ctx context.Context, bin, dir, cpus string, gomaxprocs int) (_ *SPIRE, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}

	s := &SPIRE{done: make(chan struct{}), logPath: filepath.Join(dir, "spire-server.log")}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	// A unix socket path is limited to 108 bytes (with its NUL); SPIRE
	// creates the socket's folder itself.
	sock := filepath.Join(dir, "sock", "api.sock")
	if len(sock) >= 100 {
		if s.sockDir, err = os.MkdirTemp("", "spire"); err != nil {
			return nil, fmt.Errorf("spire: %w", err)
		}
		sock = filepath.Join(s.sockDir, "api.sock")
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "server.conf")
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = %d
    socket_path = %s
    trust_domain = %q
    data_dir = %s
    log_level = "INFO"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %s
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
}
`, port, strconv.Quote(sock), SPIRETrustDomain, strconv.Quote(dataDir), strconv.Quote(filepath.Join(dataDir, "datastore.sqlite3")))
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}

	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	args := []string{bin, "run", "-config", confPath}
	if cpus != "" {
		// taskset execs the server, so the pid stays the server's.
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = os.Environ()
	if gomaxprocs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(gomaxprocs))
	}
	// Die with the process that started us, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("spire: start %s: %w", bin, err)
	}
	s.cmd = cmd
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.done)
	}()

	// Short reconnect backoff: the socket appears a moment after the start,
	// and grpc's default backoff (1 s, growing) would only add delay.
	s.conn, err = grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	s.client = svidv1.NewSVIDClient(s.conn)

	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// waitReady polls with a real MintX509SVID until one succeeds: that proves
// both the socket and the X.509 CA are up.
func (s *SPIRE) waitReady(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("spire: %w", err)
	}
	id := &url.URL{Scheme: "spiffe", Host: SPIRETrustDomain, Path: "/bench/ready"}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		return fmt.Errorf("spire: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("spire: spire-server exited early (%v); see %s", s.waitErr, s.logPath)
		default:
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, lastErr = s.Mint(callCtx, csr, time.Minute)
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("spire: not ready (%v): %w; see %s", lastErr, ctx.Err(), s.logPath)
		case <-s.done:
		case <-tick.C:
		}
	}
}

// Mint calls svid/v1 MintX509SVID with the CSR (DER) and ttl, and returns the parsed chain (leaf first).
func (s *SPIRE) Mint(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	resp, err := s.client.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csrDER, Ttl: int32(ttl / time.Second)})
	if err != nil {
		return nil, fmt.Errorf("spire: MintX509SVID: %w", err)
	}
	raw := resp.GetSvid().GetCertChain()
	if len(raw) == 0 {
		return nil, errors.New("spire: MintX509SVID: empty certificate chain")
	}
	chain := make([]*x509.Certificate, 0, len(raw))
	for _, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("spire: MintX509SVID: %w", err)
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// PID is the server process id (for RSS readings).
func (s *SPIRE) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
// It returns nil when the server ended on the signal; it is safe to call
// more than once.
func (s *SPIRE) Stop() error {
	s.stopOnce.Do(func() {
		if s.conn != nil {
			_ = s.conn.Close()
		}
		if s.cmd != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
			var exit *exec.ExitError
			if s.waitErr != nil && !(errors.As(s.waitErr, &exit) && (exit.ExitCode() == 0 || signalled(exit))) {
				s.stopErr = fmt.Errorf("spire: spire-server: %w; see %s", s.waitErr, s.logPath)
			}
		}
		if s.sockDir != "" {
			_ = os.RemoveAll(s.sockDir)
		}
	})
	return s.stopErr
}

func signalled(exit *exec.ExitError) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("spire: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
