package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/ports"
)

// SPIRETrustDomain is the trust domain StartSPIRE configures; the SPIFFE ID
// in a CSR given to Mint must belong to it.
const SPIRETrustDomain = "bench.local"

// SPIRE is a running SPIRE server, pinned to CPUs, with its admin API on a unix socket.
type SPIRE struct {
	*Proc
	conn    *grpc.ClientConn
	client  svidv1.SVIDClient
	sockDir string // a short temp folder holding the socket, removed by Stop; "" if the socket is under dir
}

// StartSPIRE runs bin (the spire-server binary) with a fresh config and data dir under dir,
// trust domain "bench.local", an in-memory key manager, sqlite datastore in dir, no upstream authority (self-signed CA),
// ca_ttl 24h, default_x509_svid_ttl 1h, run under pin. It waits until a
// first MintX509SVID succeeds. Its output goes to dir/spire-server.log.
//
// The admin API is the server's local unix socket (socket_path); SPIRE
// authorizes MintX509SVID for any caller on it, so no admin ID or agent is
// needed. The server also needs a TCP listener for agents (bind_address and
// bind_port are mandatory); it gets a free port on 127.0.0.1.
func StartSPIRE(ctx context.Context, bin, dir string, pin Pinned) (_ *SPIRE, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}

	s := &SPIRE{}
	defer func() {
		if err != nil {
			s.Stop()
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

	if s.Proc, err = pin.Start(dir, "spire-server", bin, "run", "-config", confPath); err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}

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

	// Ready when a real MintX509SVID succeeds: the socket and the X.509 CA
	// are both up.
	csr, err := CSR("spiffe://" + SPIRETrustDomain + "/bench/ready")
	if err != nil {
		return nil, err
	}
	err = s.WaitFor(30*time.Second, func() error {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := s.Mint(callCtx, csr, time.Minute)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("spire: %w", err)
	}
	return s, nil
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

// Stop ends the server (SIGTERM, then SIGKILL after 5 s) and waits for it;
// it is safe to call more than once.
func (s *SPIRE) Stop() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.Proc != nil {
		s.Proc.Stop()
	}
	if s.sockDir != "" {
		_ = os.RemoveAll(s.sockDir)
	}
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	p, err := ports.Free(1)
	if err != nil {
		return 0, fmt.Errorf("spire: %w", err)
	}
	return p[0], nil
}
