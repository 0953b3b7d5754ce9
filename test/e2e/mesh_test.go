package e2e_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/bundle"
)

// meshProxy is a meshid-proxy process for one service account.
type meshProxy struct {
	*process
	sa, tokenFile, bundleFile string
}

// startProxy starts meshid-proxy for sa with a token from TokenRequest.
func startProxy(t *testing.T, ca *caProcess, ns, sa string, args ...string) *meshProxy {
	return startProxyAt(t, ca, ca.addr, ns, sa, args...)
}

// startProxyAt is startProxy against the CA replica at addr.
func startProxyAt(t *testing.T, ca *caProcess, addr, ns, sa string, args ...string) *meshProxy {
	t.Helper()
	return startProxyWith(t, ca, addr, ca.anchor.CertPEM(), ns, sa, args...)
}

// startProxyPEM is startProxy with the trust bundle anchors.
func startProxyPEM(t *testing.T, ca *caProcess, anchors []byte, ns, sa string, args ...string) *meshProxy {
	t.Helper()
	return startProxyWith(t, ca, ca.addr, anchors, ns, sa, args...)
}

func startProxyWith(t *testing.T, ca *caProcess, addr string, anchors []byte, ns, sa string, args ...string) *meshProxy {
	t.Helper()
	dir := t.TempDir()
	p := &meshProxy{sa: sa, tokenFile: filepath.Join(dir, "token"), bundleFile: filepath.Join(dir, "ca-bundle.crt")}
	if err := os.WriteFile(p.tokenFile, []byte(token(t, ns, sa, audience, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.bundleFile, anchors, 0o644); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	p.process = startProcess(t, "meshid-proxy", admin, append([]string{
		"--ca", addr, "--ca-id", ca.id(t).String(),
		"--token-file", p.tokenFile, "--trust-bundle-file", p.bundleFile,
		"--admin-listen", admin, "--poll-interval", "100ms",
	}, args...)...)
	return p
}

type identityDoc struct {
	Chain           string    `json:"chain_pem"`
	SPIFFEID        string    `json:"spiffe_id"`
	Serial          string    `json:"serial"`
	NotAfter        time.Time `json:"not_after"`
	PublicKeySHA256 string    `json:"public_key_sha256"`
	BundleSHA256    string    `json:"bundle_sha256"`
	Policy          string    `json:"policy"`
}

// parsePEMChain returns the chain a proxy reported.
func parsePEMChain(id identityDoc) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(id.Chain)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no chain in /identity")
	}
	return certs, nil
}

func (p *meshProxy) identity(t *testing.T) identityDoc {
	t.Helper()
	return identityAt(t, http.DefaultClient, "http://"+p.admin)
}

// identityAt reads /identity of the admin endpoint at base, through
// client.
func identityAt(t *testing.T, client *http.Client, base string) identityDoc {
	t.Helper()
	resp, err := client.Get(base + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc identityDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// app is an HTTP server standing in for a workload.
func app(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello from %s: %s", name, body)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// get sends one request through an outbound listener.
func get(client *http.Client, addr, msg string) (string, error) {
	resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader(msg))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, body)
	}
	return string(body), nil
}

var fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestMesh: web, db and evil behind proxies; db allows only web.
func TestMesh(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	ns := namespace(t, "mesh")
	for _, sa := range []string{"web", "db", "evil"} {
		serviceAccount(t, ns, sa)
	}
	dbID := "spiffe://cluster.local/ns/" + ns + "/sa/db"
	dbApp := app(t, "db")
	dbIn := freeAddr(t)
	_, dbPort, _ := net.SplitHostPort(dbIn)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, fmt.Sprintf("ports:\n- port: %s\n  mode: deny\n  allow:\n  - serviceAccount: %s/web\n", dbPort, ns))
	db := startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+dbApp, "--policy", policyFile)

	webOut, evilOut := freeAddr(t), freeAddr(t)
	socket := filepath.Join(t.TempDir(), "workload.sock")
	web := startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn+",id="+dbID, "--workload-api", "unix://"+socket)
	startProxy(t, ca, ns, "evil", "--outbound", evilOut+"="+dbIn)

	t.Run("web reaches db", func(t *testing.T) {
		got, err := get(fresh, webOut, "ping")
		if err != nil || got != "hello from db: ping" {
			t.Fatalf("web -> db: %q, %v", got, err)
		}
	})

	t.Run("evil is refused in the handshake", func(t *testing.T) {
		if got, err := get(fresh, evilOut, "ping"); err == nil {
			t.Fatalf("evil -> db answered %q", got)
		}
		evilID := "spiffe://cluster.local/ns/" + ns + "/sa/evil"
		series := fmt.Sprintf(`meshid_proxy_policy_denials_total{peer_id=%q,port=%q}`, evilID, dbPort)
		eventually(t, 5*time.Second, func() error {
			if v := db.metric(t, series); v < 1 {
				return fmt.Errorf("%s = %v", series, v)
			}
			if !strings.Contains(db.logs(t), `"peer_id":"`+evilID+`"`) {
				return fmt.Errorf("no log line names %s", evilID)
			}
			return nil
		})
	})

	t.Run("plain TCP is refused", func(t *testing.T) {
		c, err := net.Dial("tcp", dbIn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, _ := io.ReadAll(c); len(b) > 0 {
			t.Fatalf("plain TCP got an answer: %q", b)
		}
		eventually(t, 5*time.Second, func() error {
			if v := db.metric(t, `meshid_proxy_handshake_failures_total{direction="inbound",reason="plaintext_refused"}`); v < 1 {
				return fmt.Errorf("plaintext_refused = %v", v)
			}
			return nil
		})
	})

	t.Run("curl and openssl with web's certificate", func(t *testing.T) {
		out := certifyAs(t, ca, ns, "web", web.bundleFile)
		cert, key, anchors := filepath.Join(out, "svid.pem"), filepath.Join(out, "svid.key"), filepath.Join(out, "bundle.pem")
		// curl checks host names, which SPIFFE certificates do not carry:
		// -k skips that; the client certificate is what db checks.
		b, err := exec.Command("curl", "-sS", "-k", "--tlsv1.3", "--cert", cert, "--key", key, "--data", "curl", "https://"+dbIn+"/").CombinedOutput()
		if err != nil || string(b) != "hello from db: curl" {
			t.Fatalf("curl with web's certificate: %v: %s", err, b)
		}
		if b, err := exec.Command("curl", "-sS", "-k", "https://"+dbIn+"/").CombinedOutput(); err == nil {
			t.Fatalf("curl without a certificate got through: %s", b)
		}
		// openssl verifies db's chain against the anchor.
		s := exec.Command("openssl", "s_client", "-connect", dbIn, "-tls1_3", "-cert", cert, "-cert_chain", cert, "-key", key,
			"-CAfile", anchors, "-verify_return_error", "-quiet")
		s.Stdin = strings.NewReader("POST / HTTP/1.0\r\nContent-Length: 7\r\n\r\nopenssl")
		b, err = s.CombinedOutput()
		if err != nil || !bytes.Contains(b, []byte("hello from db: openssl")) {
			t.Fatalf("openssl s_client: %v\n%s", err, b)
		}
	})

	t.Run("go-spiffe workloadapi client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
		if err != nil {
			t.Fatal(err)
		}
		if want := "spiffe://cluster.local/ns/" + ns + "/sa/web"; svid.ID.String() != want {
			t.Fatalf("Workload API SVID %s, want %s", svid.ID, want)
		}
		bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+socket))
		if err != nil {
			t.Fatal(err)
		}
		if b, err := bundles.GetX509BundleForTrustDomain(trustDomain); err != nil || !b.HasX509Authority(ca.anchor.Cert) {
			t.Fatalf("Workload API bundle: %v", err)
		}
	})

	t.Run("policy change applies without a restart", func(t *testing.T) {
		writeFile(t, policyFile, fmt.Sprintf("ports:\n- port: %s\n  allow:\n  - namespace: %s\n", dbPort, ns))
		eventually(t, 10*time.Second, func() error {
			_, err := get(fresh, evilOut, "again")
			return err
		})
		// A broken policy is refused; the last good one stays.
		writeFile(t, policyFile, "ports:\n- port: not-a-number\n")
		eventually(t, 10*time.Second, func() error {
			if v := db.metric(t, `meshid_proxy_policy_reloads_total{result="refused"}`); v < 1 {
				return fmt.Errorf("policy refusals = %v", v)
			}
			return nil
		})
		if _, err := get(fresh, evilOut, "still"); err != nil {
			t.Fatalf("after a refused policy, the last good one no longer applies: %v", err)
		}
	})

	t.Run("a new bundle applies without a restart", func(t *testing.T) {
		both, err := bundle.New(ca.anchor.Cert, newAnchor(t, "next anchor").Cert)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []*meshProxy{web, db} {
			writeFile(t, p.bundleFile, string(both.PEM()))
		}
		for _, p := range []*meshProxy{web, db} {
			eventually(t, 10*time.Second, func() error {
				if got := p.identity(t).BundleSHA256; got != both.SHA256() {
					return fmt.Errorf("%s proxy bundle %s, want %s", p.sa, got, both.SHA256())
				}
				return nil
			})
		}
		if got, err := get(fresh, webOut, "after"); err != nil || got != "hello from db: after" {
			t.Fatalf("web -> db after the bundle change: %q, %v", got, err)
		}
		// A malformed bundle file is refused; traffic goes on.
		writeFile(t, web.bundleFile, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
		eventually(t, 10*time.Second, func() error {
			if v := web.metric(t, `meshid_proxy_bundle_updates_total{result="refused",source="file"}`); v < 1 {
				return fmt.Errorf("bundle refusals = %v", v)
			}
			return nil
		})
		if got := web.identity(t).BundleSHA256; got != both.SHA256() {
			t.Fatalf("bundle after a refused file: %s, want the last good %s", got, both.SHA256())
		}
		if _, err := get(fresh, webOut, "still"); err != nil {
			t.Fatal(err)
		}
	})
}

// certifyAs runs meshid certify as service account ns/sa, with a token of
// the CA's audience and the anchors in bundleFile, into a new folder, and
// returns that folder (svid.pem, svid.key, bundle.pem).
func certifyAs(t *testing.T, ca *caProcess, ns, sa, bundleFile string) string {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token(t, ns, sa, audience, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "svid")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(filepath.Join(need(t).bin, "meshid"), "certify", "--ca", ca.addr, "--ca-id", ca.id(t).String(),
		"--token-file", tokenFile, "--trust-bundle-file", bundleFile, "--out-dir", out).CombinedOutput(); err != nil {
		t.Fatalf("meshid certify: %v\n%s", err, b)
	}
	return out
}
