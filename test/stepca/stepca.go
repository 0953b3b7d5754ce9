// Package stepca runs a real step-ca (built by install.sh from
// github.com/smallstep/certificates) for tests: its own root, which signs
// meshid's intermediates directly, and a JWK provisioner whose X.509
// template makes CAs with maxPathLen 0 (the ca.json docs/ca.md shows).
// Only tests under test/ import it.
package stepca

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/test/ports"
)

// Template is the provisioner's X.509 template: an intermediate CA that
// may sign leaves only (x509util.DefaultIntermediateTemplate).
const Template = `{
	"subject": {{ toJson .Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// Server is one step-ca process and what a client needs to use it.
type Server struct {
	URL         string
	RootPEM     []byte
	Root        *issuer.KeyPair
	Provisioner string
	KeyJSON     []byte // the provisioner's private JWK

	bin, config, logPath string
	cmd                  *exec.Cmd
	done                 chan struct{}
}

// Bin returns the step-ca binary from MESHID_STEPCA_BIN, or skips t.
func Bin(t testing.TB) string {
	bin := os.Getenv("MESHID_STEPCA_BIN")
	if bin == "" {
		t.Skip(`MESHID_STEPCA_BIN is not set: MESHID_STEPCA_BIN="$(test/stepca/install.sh | tail -n1)"`)
	}
	return bin
}

// Start writes a root, a JWK provisioner and ca.json under t.TempDir() and
// starts step-ca on a loopback port; t's cleanup stops it. The provisioner
// signs for 1 minute (below step-ca's default minimum of 5, for short-lived
// issuers in tests) up to maxDuration. Its log (which
// holds whole tokens) stays in that private folder.
func Start(t testing.TB, bin string, maxDuration time.Duration) *Server {
	t.Helper()
	dir := t.TempDir()
	root, err := issuer.NewAnchor(issuer.CAParams{CommonName: "step-ca test root", TTL: 30 * 24 * time.Hour, NotBefore: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := root.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if jwk.KeyID, err = jose.Thumbprint(jwk); err != nil {
		t.Fatal(err)
	}
	priv, _ := json.Marshal(jwk)
	pub := jwk.Public()
	port := freePort(t)
	s := &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", port), RootPEM: root.CertPEM(), Root: root, Provisioner: "meshid", KeyJSON: priv, bin: bin,
		config: filepath.Join(dir, "ca.json"), logPath: filepath.Join(dir, "step-ca.log")}
	write(t, filepath.Join(dir, "root.crt"), s.RootPEM, 0o644)
	write(t, filepath.Join(dir, "root.key"), keyPEM, 0o600)
	cfg := map[string]any{
		"root": filepath.Join(dir, "root.crt"), "crt": filepath.Join(dir, "root.crt"), "key": filepath.Join(dir, "root.key"),
		"address": fmt.Sprintf("127.0.0.1:%d", port), "dnsNames": []string{"127.0.0.1", "localhost"},
		"logger": map[string]any{"format": "text"},
		"authority": map[string]any{"provisioners": []any{map[string]any{
			"type": "JWK", "name": s.Provisioner, "key": &pub,
			"claims":  map[string]any{"minTLSCertDuration": "1m", "maxTLSCertDuration": maxDuration.String(), "defaultTLSCertDuration": min(maxDuration, 24*time.Hour).String()},
			"options": map[string]any{"x509": map[string]any{"template": Template}},
		}}},
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	write(t, s.config, data, 0o600)
	s.Restart(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Restart starts step-ca again after Stop (or the first time), and waits
// until it answers on its port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s.cmd = exec.Command(s.bin, s.config)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start step-ca: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	addr := s.URL[len("https://"):]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(s.logPath)
			t.Fatalf("step-ca exited at start:\n%.2000s", out)
		case <-ctx.Done():
			t.Fatalf("step-ca did not listen on %s within 30 s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop ends step-ca and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

func freePort(t testing.TB) int { return ports.Port(t) }

func write(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
