package ca_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

// trustFiles are the issuer and bundle files a Service reads.
type trustFiles struct{ cert, key, bundle string }

func (f trustFiles) write(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (f trustFiles) issuer(t *testing.T, kp *issuer.KeyPair) {
	t.Helper()
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, f.key, key)
	f.write(t, f.cert, kp.CertPEM())
}

// runService writes the anchor's bundle and the issuer's files, then runs a
// Service that reads them every 10 ms with the fake clientset, its gRPC API
// on loopback and no periodic fleet report; mod changes the Config first
// (nil: none). The Service stops at the test's end, and Run must return nil.
func runService(t *testing.T, anchor, iss *issuer.KeyPair, mod func(*ca.Config)) (*ca.Service, trustFiles, context.Context) {
	t.Helper()
	dir := t.TempDir()
	f := trustFiles{cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"), bundle: filepath.Join(dir, "ca-bundle.crt")}
	f.write(t, f.bundle, anchor.CertPEM())
	f.issuer(t, iss)
	cfg := ca.Config{
		TrustDomain: td, Audience: identity.DefaultAudience, Client: fake.NewClientset(), Namespace: "meshid", ServiceAccount: "meshid-ca",
		IssuerCertFile: f.cert, IssuerKeyFile: f.key, BundleFile: f.bundle, FilePollInterval: 10 * time.Millisecond,
		Listen: "127.0.0.1:0", FleetReportInterval: -1,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := ca.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return s, f, ctx
}

// fleetReport asks the Service's admin handler for its report.
func fleetReport(t *testing.T, s *ca.Service) fleet.Report {
	t.Helper()
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/fleet", nil))
	var r fleet.Report
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("/fleet: %v\n%s", err, rec.Body.String())
	}
	return r
}

// waitReport polls the report until cond accepts it, for at most 10 s.
func waitReport(t *testing.T, s *ca.Service, cond func(fleet.Report) error) fleet.Report {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := fleetReport(t, s)
		err := cond(r)
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v; report %+v", err, r)
		}
		time.Sleep(10 * time.Millisecond) // the files are polled every 10 ms
	}
}

func update(r fleet.Report, material string) (fleet.Update, bool) {
	for _, u := range r.Updates {
		if u.Material == material {
			return u, true
		}
	}
	return fleet.Update{}, false
}

// TestFleetReportTrust: a replica's report says what it has in force (the
// issuer, its chain's expiry and anchor, the bundle's anchors) and which
// update it did not take, why and since when; a good update clears it.
func TestFleetReportTrust(t *testing.T) {
	now := time.Now()
	anchor, err := issuer.NewAnchor(issuer.CAParams{CommonName: "anchor", NotBefore: now.Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "good issuer", NotBefore: now.Add(-time.Hour), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "expired issuer", NotBefore: now.Add(-72 * time.Hour), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := issuer.NewAnchor(issuer.CAParams{CommonName: "stranger", NotBefore: now.Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, f, _ := runService(t, anchor, good, func(c *ca.Config) { c.Replica = "replica-a" })

	inForce := func(r fleet.Report) error {
		if r.Issuer == nil || r.IssuerSHA256 != good.Fingerprint() {
			return fmt.Errorf("issuer in force %s, want %s", r.IssuerSHA256, good.Fingerprint())
		}
		return nil
	}
	r := waitReport(t, s, func(r fleet.Report) error {
		if err := inForce(r); err != nil {
			return err
		}
		if len(r.Updates) != 0 {
			return fmt.Errorf("updates %+v before any bad one", r.Updates)
		}
		return nil
	})
	b, _ := bundle.New(anchor.Cert)
	want := fleet.Issuer{Subject: good.Cert.Subject.String(), NotBefore: good.Cert.NotBefore, NotAfter: good.NotAfter(), ChainNotAfter: good.NotAfter(), AnchorSHA256: bundle.Fingerprint(anchor.Cert)}
	if got := *r.Issuer; !got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) || !got.ChainNotAfter.Equal(want.ChainNotAfter) || got.Subject != want.Subject || got.AnchorSHA256 != want.AnchorSHA256 {
		t.Fatalf("issuer %+v, want %+v", got, want)
	}
	if r.BundleSHA256 != b.SHA256() || r.AnchorsTotal != 1 || len(r.Anchors) != 1 || r.Anchors[0].SHA256 != bundle.Fingerprint(anchor.Cert) || !r.Anchors[0].NotAfter.Equal(anchor.Cert.NotAfter) {
		t.Fatalf("bundle %s, anchors %d %+v; want %s with the anchor", r.BundleSHA256, r.AnchorsTotal, r.Anchors, b.SHA256())
	}

	t.Log("an expired issuer is refused; the good one stays in force")
	f.issuer(t, expired)
	r = waitReport(t, s, func(r fleet.Report) error {
		if u, ok := update(r, "issuer"); !ok || u.SHA256 != expired.Fingerprint() {
			return fmt.Errorf("no refused update of the expired issuer")
		}
		return inForce(r)
	})
	refused, _ := update(r, "issuer")
	if refused.Status != fleet.UpdateRefused || !strings.Contains(refused.Reason, "expired") || refused.Source != "files "+f.cert+","+f.key || refused.Since.IsZero() {
		t.Fatalf("update %+v, want refused as expired, from the files, with a time", refused)
	}

	t.Log("unreadable files: gone, and Since stays while they are")
	if err := os.Remove(f.key); err != nil {
		t.Fatal(err)
	}
	r = waitReport(t, s, func(r fleet.Report) error {
		if u, _ := update(r, "issuer"); u.Status != fleet.UpdateGone {
			return fmt.Errorf("issuer update %+v, want gone", u)
		}
		return inForce(r)
	})
	first, _ := update(r, "issuer")
	if !strings.Contains(first.Reason, "cannot read") {
		t.Fatalf("gone update %+v does not say the files cannot be read", first)
	}
	waitReport(t, s, func(r fleet.Report) error {
		if u, _ := update(r, "issuer"); !u.Since.Equal(first.Since) {
			return fmt.Errorf("Since moved from %s to %s", first.Since, u.Since)
		}
		if !r.Updated.After(first.Since.Add(50 * time.Millisecond)) {
			return fmt.Errorf("not five polls later yet")
		}
		return nil
	})

	t.Log("the good issuer back: nothing pending")
	f.issuer(t, good)
	waitReport(t, s, func(r fleet.Report) error {
		if len(r.Updates) != 0 {
			return fmt.Errorf("updates %+v after the good issuer came back", r.Updates)
		}
		return inForce(r)
	})

	t.Log("a bundle without the issuer's anchor is held back, until it is withdrawn")
	f.write(t, f.bundle, stranger.CertPEM())
	r = waitReport(t, s, func(r fleet.Report) error {
		if u, ok := update(r, "bundle"); !ok || u.Status != fleet.UpdateHeldBack {
			return fmt.Errorf("bundle update %+v, want held back", u)
		}
		return nil
	})
	if u, _ := update(r, "bundle"); r.BundleSHA256 != b.SHA256() || u.Source != "files "+f.bundle || !strings.Contains(u.Reason, "held back") {
		t.Fatalf("bundle in force %s, update %+v", r.BundleSHA256, u)
	}
	f.write(t, f.bundle, anchor.CertPEM())
	waitReport(t, s, func(r fleet.Report) error {
		if len(r.Updates) != 0 {
			return fmt.Errorf("updates %+v after the bundle came back", r.Updates)
		}
		return nil
	})
}
