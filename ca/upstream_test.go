package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/upstream"
)

// upstreamFake signs intermediates with root at its clock's time, or
// answers a certificate that is not a CA, or is down.
type upstreamFake struct {
	root  *issuer.KeyPair
	clock *clocktesting.FakeClock

	mu     sync.Mutex
	mode   string // "", "not-ca", "down"
	issued []*x509.Certificate
}

func (f *upstreamFake) Describe() string { return "fake upstream" }

func (f *upstreamFake) set(mode string) { f.mu.Lock(); f.mode = mode; f.mu.Unlock() }

func (f *upstreamFake) last() *x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued[len(f.issued)-1]
}

func (f *upstreamFake) Sign(_ context.Context, req upstream.Request) (*upstream.Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode == "down" {
		return nil, errors.New("connection refused")
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, err
	}
	serial, _ := issuer.NewSerial()
	now := f.clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: req.Subject, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(req.TTL),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: f.mode != "not-ca", MaxPathLenZero: f.mode != "not-ca",
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root.Cert, csr.PublicKey, f.root.Key)
	if err != nil {
		return nil, err
	}
	c, _ := x509.ParseCertificate(der)
	f.issued = append(f.issued, c)
	return &upstream.Answer{Certificate: c, Roots: []*x509.Certificate{f.root.Cert}}, nil
}

func metricsText(t *testing.T, s *ca.Service) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// TestServiceUpstream: with an Upstream, the replica's issuer is the
// intermediate it obtained, renewed at half life; a refused answer and an
// unreachable upstream leave it in force and are counted, recorded in the
// fleet report (a refused answer as an issuer update, the failures in its
// Upstream) and told as Events; the upstream's return renews it.
func TestServiceUpstream(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	root, err := issuer.NewAnchor(issuer.CAParams{CommonName: "upstream root", NotBefore: clk.Now().Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	up := &upstreamFake{root: root, clock: clk}
	dir := t.TempDir()
	f := trustFiles{bundle: filepath.Join(dir, "ca-bundle.crt")}
	f.write(t, f.bundle, root.CertPEM())
	client := fake.NewClientset()
	s, err := ca.New(ca.Config{
		TrustDomain: td, Audience: identity.DefaultAudience, Client: client, Namespace: "meshid", ServiceAccount: "meshid-ca",
		Upstream: up, IssuerTTL: 48 * time.Hour, BundleFile: f.bundle, FilePollInterval: time.Hour,
		Listen: "127.0.0.1:0", Replica: "replica-a", FleetReportInterval: -1, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	startService(t, s)
	has := func(series string) func(fleet.Report) error {
		return func(fleet.Report) error {
			if !strings.Contains(metricsText(t, s), series+"\n") {
				return fmt.Errorf("no %s", series)
			}
			return nil
		}
	}
	event := func(reason string) error {
		evs, err := client.CoreV1().Events("meshid").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.InvolvedObject.Name == "replica-a" && e.InvolvedObject.Kind == "Pod" {
				return nil
			}
		}
		return fmt.Errorf("no %s Event about the replica in %d", reason, len(evs.Items))
	}

	waitReport(t, s, has(`meshid_ca_upstream_requests_total{result="ok"} 1`))
	r := fleetReport(t, s) // after the metric: the attempt is over
	first := up.last()
	if r.IssuerSHA256 != fingerprintOf(first) {
		t.Fatalf("issuer in force %s, want the upstream's intermediate", r.IssuerSHA256)
	}
	if u := r.Upstream; u == nil || u.Upstream != "fake upstream" || u.KeyLocation != "memory" || !u.Reachable || u.Failures != 0 ||
		!u.NotAfter.Equal(first.NotAfter) || u.LastRenewal.IsZero() || !u.NextRenewal.After(u.LastRenewal) {
		t.Fatalf("the report's upstream %+v, want the renewal just made, key in memory", u)
	}
	waitReport(t, s, func(fleet.Report) error { return event("IssuerRenewed") })
	m := metricsText(t, s)
	for _, want := range []string{
		`meshid_ca_upstream_issuer_expiry_timestamp_seconds{upstream="fake upstream"} ` + strconv.FormatFloat(float64(first.NotAfter.Unix()), 'g', -1, 64),
		`meshid_ca_upstream_up{upstream="fake upstream"} 1`,
		`meshid_ca_upstream_renewal_failures{upstream="fake upstream"} 0`,
		`meshid_ca_upstream_request_duration_seconds_count 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	t.Log("at half life the upstream answers with CA:FALSE: refused, the first stays")
	up.set("not-ca")
	clk.Step(24*time.Hour + time.Second)
	waitReport(t, s, has(`meshid_ca_upstream_requests_total{result="refused"} 1`))
	r = fleetReport(t, s)
	if u, ok := update(r, "issuer"); !ok || u.Status != fleet.UpdateRefused || !strings.Contains(u.Reason, "not a CA") || u.Source != "fake upstream" {
		t.Fatalf("issuer update %+v, want refused as not a CA, from the upstream", u)
	}
	if r.IssuerSHA256 != fingerprintOf(first) {
		t.Fatal("the refused intermediate was put in force")
	}
	waitReport(t, s, func(fleet.Report) error { return event("IssuerRefused") })
	if !strings.Contains(metricsText(t, s), `meshid_ca_update_refused{material="issuer"} 1`) {
		t.Error("meshid_ca_update_refused{material=\"issuer\"} is not 1 after a refusal")
	}

	t.Log("the upstream down: the first stays, the failure is recorded")
	up.set("down")
	clk.Step(5 * time.Second)
	waitReport(t, s, has(`meshid_ca_upstream_requests_total{result="failed"} 1`))
	r = fleetReport(t, s)
	if u, _ := update(r, "issuer"); u.Status != fleet.UpdateRefused {
		t.Fatalf("issuer update %+v, want still the refused answer (no answer since is the upstream's state, not an update)", u)
	}
	if u := r.Upstream; u == nil || u.Reachable || u.Failures != 2 || !strings.Contains(u.LastError, "connection refused") || !u.NotAfter.Equal(first.NotAfter) {
		t.Fatalf("the report's upstream %+v, want unreachable, 2 failures, the first still in force", u)
	}
	waitReport(t, s, func(fleet.Report) error { return event("UpstreamUnreachable") })
	waitReport(t, s, has(`meshid_ca_upstream_up{upstream="fake upstream"} 0`))
	if err := ready(s); err != nil {
		t.Fatalf("not ready while the intermediate in force is valid: %v", err)
	}

	t.Log("the upstream back: renewed by itself, nothing pending")
	up.set("")
	clk.Step(10 * time.Second)
	r = waitReport(t, s, func(r fleet.Report) error {
		if err := has(`meshid_ca_upstream_requests_total{result="ok"} 2`)(r); err != nil {
			return err
		}
		if len(r.Updates) != 0 {
			return fmt.Errorf("updates %+v after the renewal", r.Updates)
		}
		return nil
	})
	if r.IssuerSHA256 == fingerprintOf(first) || r.IssuerSHA256 != fingerprintOf(up.last()) {
		t.Fatal("the new intermediate is not in force")
	}
}

func fingerprintOf(c *x509.Certificate) string { return bundle.Fingerprint(c) }

func ready(s *ca.Service) error {
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
	if rec.Code != http.StatusOK {
		return errors.New(rec.Body.String())
	}
	return nil
}

// TestServiceUpstreamHSMKey: with IssuerKey (an HSM key, --issuer-key
// pkcs11:...) every intermediate certifies that key, and the report says
// where it lives.
func TestServiceUpstreamHSMKey(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	root, err := issuer.NewAnchor(issuer.CAParams{CommonName: "upstream root", NotBefore: clk.Now().Add(-time.Hour), TTL: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	up := &upstreamFake{root: root, clock: clk}
	f := trustFiles{bundle: filepath.Join(t.TempDir(), "ca-bundle.crt")}
	f.write(t, f.bundle, root.CertPEM())
	s, err := ca.New(ca.Config{
		TrustDomain: td, Audience: identity.DefaultAudience, Client: fake.NewClientset(), Namespace: "meshid", ServiceAccount: "meshid-ca",
		Upstream: up, IssuerKeyURI: "pkcs11:token=meshid;id=01;object=issuer?pin-source=/run/pin", IssuerKey: key,
		BundleFile: f.bundle, FilePollInterval: time.Hour, Listen: "127.0.0.1:0", Replica: "replica-a", FleetReportInterval: -1, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	startService(t, s)
	for i := 1; i <= 2; i++ {
		waitReport(t, s, func(r fleet.Report) error {
			if r.Upstream == nil || r.Upstream.LastRenewal.IsZero() || len(up.issuedN()) < i || r.IssuerSHA256 != fingerprintOf(up.last()) {
				return fmt.Errorf("intermediate %d not in force yet", i)
			}
			return nil
		})
		if c := up.last(); !key.PublicKey.Equal(c.PublicKey) {
			t.Fatalf("intermediate %d certifies another key than the HSM's", i)
		}
		clk.Step(25 * time.Hour) // past half life: the next one
	}
	if r := fleetReport(t, s); r.Upstream.KeyLocation != "pkcs11" {
		t.Fatalf("key location %q, want pkcs11", r.Upstream.KeyLocation)
	}
}

func (f *upstreamFake) issuedN() []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.issued)
}
