package stepca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/upstream"
	upstreamstepca "github.com/meshid/meshid/issuer/upstream/stepca"
	"github.com/meshid/meshid/test/stepca"
)

// TestRenewerWithStepCA gets meshid's intermediate from a real step-ca,
// signs a leaf that openssl and go-spiffe verify against step-ca's root,
// keeps the intermediate while step-ca is stopped, and renews by itself
// when it returns.
func TestRenewerWithStepCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts step-ca")
	}
	srv := stepca.Start(t, stepca.Bin(t), 1000*time.Hour)
	client, err := upstreamstepca.New(upstreamstepca.Config{URL: srv.URL, RootPEM: srv.RootPEM, Provisioner: srv.Provisioner, Key: srv.KeyJSON})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Health(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	var mu sync.Mutex
	var used []*issuer.KeyPair
	r, err := upstream.NewRenewer(upstream.Config{
		Authority: client, TTL: 2 * time.Hour, RetryMin: time.Second,
		Use: func(kp *issuer.KeyPair, roots []*x509.Certificate) error {
			mu.Lock()
			defer mu.Unlock()
			used = append(used, kp)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Renew(ctx)
	if st := r.Status(); len(used) != 1 || st.Failures != 0 {
		t.Fatalf("first renewal: status %+v", st)
	}
	kp := used[0]
	if !kp.Cert.IsCA || !kp.Cert.MaxPathLenZero || kp.Cert.MaxPathLen != 0 {
		t.Fatalf("step-ca's intermediate: CA %v, pathlen %d (zero %v); want a CA with pathlen 0", kp.Cert.IsCA, kp.Cert.MaxPathLen, kp.Cert.MaxPathLenZero)
	}
	if life := kp.Cert.NotAfter.Sub(kp.Cert.NotBefore); life < 2*time.Hour || life > 2*time.Hour+2*time.Minute {
		t.Errorf("intermediate life %s, want the 2h asked (NotBefore backdated by step-ca)", life)
	}

	// A leaf under it verifies with openssl and go-spiffe against the root.
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := kp.Sign(ctx, issuer.LeafParams{ID: id, PublicKey: leafKey.Public(), Now: time.Now(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leafCert, _ := leaf.Certificate()
	dir := t.TempDir()
	chainPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Cert.Raw})
	os.WriteFile(filepath.Join(dir, "root.pem"), srv.RootPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "inter.pem"), chainPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "leaf.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.DER}), 0o644)
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "root.pem"), "-untrusted", filepath.Join(dir, "inter.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	if gotID, _, err := x509svid.Verify([]*x509.Certificate{leafCert, kp.Cert}, x509bundle.FromX509Authorities(td, []*x509.Certificate{srv.Root.Cert})); err != nil || gotID != id {
		t.Fatalf("go-spiffe verify: %v (id %s)", err, gotID)
	}

	// step-ca down: the intermediate in force stays, the failure is counted.
	srv.Stop(t)
	r.Renew(ctx)
	st := r.Status()
	if len(used) != 1 || st.Reachable || st.Failures != 1 || st.NotAfter != kp.NotAfter() {
		t.Fatalf("with step-ca down: %d used, status %+v; want the first kept, unreachable, one failure", len(used), st)
	}
	// Back: the next attempt renews.
	srv.Restart(t)
	r.Renew(ctx)
	if st := r.Status(); len(used) != 2 || st.Failures != 0 || !st.Reachable {
		t.Fatalf("after step-ca returned: %d used, status %+v; want a second intermediate", len(used), st)
	}

	// A CA the provisioner refuses (over its maximum duration) is a clear
	// error, and nothing is used.
	long, err := upstream.NewRenewer(upstream.Config{Authority: client, TTL: 2000 * time.Hour, Use: func(*issuer.KeyPair, []*x509.Certificate) error {
		t.Error("a refused request was used")
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	long.Renew(ctx)
	if st := long.Status(); st.Failures != 1 || !strings.Contains(st.LastError, "403") {
		t.Fatalf("over the provisioner's maximum: status %+v; want step-ca's 403", st)
	}
}
