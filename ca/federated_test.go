package ca_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/foreign"
	"github.com/meshid/meshid/issuer/issuertest"
)

// TestFederated: a FederatedTrustDomain with an initial bundle is in force
// at once; its endpoint's bundle (a second anchor) is fetched, stored in
// the status and in force; garbage from the endpoint is refused, counted
// and stored as a failure while the good bundle stays. A second Federated
// (a restarted CA) over the stored status trusts the fetched bundle before
// any fetch, with the endpoint still answering garbage.
func TestFederated(t *testing.T) {
	foreignTD := spiffeid.RequireTrustDomainFromString("b.example")
	endpointID := spiffeid.RequireFromPath(foreignTD, "/ns/meshid/sa/meshid-ca")
	anchor := issuertest.Anchor(t, issuertest.Name("b anchor"))
	next := issuertest.Anchor(t, issuertest.Name("b next"))
	leaf := issuertest.Leaf(t, anchor, endpointID)
	var garbage atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if garbage.Load() {
			_, _ = w.Write([]byte("garbage"))
			return
		}
		b := spiffebundle.FromX509Authorities(foreignTD, []*x509.Certificate{anchor.Cert, next.Cert})
		b.SetRefreshHint(time.Second)
		doc, _ := b.Marshal()
		_, _ = w.Write(doc)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ftd := &v1alpha1.FederatedTrustDomain{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "FederatedTrustDomain"},
		ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: v1alpha1.FederatedTrustDomainSpec{TrustDomain: foreignTD.Name(), BundleEndpointURL: srv.URL, Profile: v1alpha1.ProfileSPIFFE,
			EndpointSPIFFEID: endpointID.String(), InitialBundle: string(anchor.CertPEM())},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ftd)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.Resource: "FederatedTrustDomainList"}, &unstructured.Unstructured{Object: obj})
	pace := foreign.Pace{Min: 20 * time.Millisecond, Backoff: 10 * time.Millisecond}
	start := func(reg *prometheus.Registry) *ca.Federated {
		f, err := ca.NewFederated(ca.FederatedConfig{Dynamic: dyn, TrustDomain: td, Pace: pace, Limits: foreign.Limits{Timeout: 5 * time.Second}, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
		return f
	}
	// wait polls cond for at most 10 s (the fetches are 20 ms apart).
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 10 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	stored := func() v1alpha1.FederatedTrustDomainStatus {
		u, err := dyn.Resource(v1alpha1.Resource).Get(context.Background(), "b", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got v1alpha1.FederatedTrustDomain
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got); err != nil {
			t.Fatal(err)
		}
		return got.Status
	}
	both, err := bundle.New(anchor.Cert, next.Cert)
	if err != nil {
		t.Fatal(err)
	}
	inForce := func(f *ca.Federated, want *bundle.Bundle) func() bool {
		return func() bool {
			bs := f.Bundles()
			return len(bs) == 1 && bs[0].GetTrustDomain() == foreignTD.Name() && bs[0].GetSha256() == want.SHA256()
		}
	}

	reg := prometheus.NewRegistry()
	f := start(reg)
	wait("fetched bundle in force", inForce(f, both))
	st := stored()
	if st.Bundle == "" || st.LastRefresh == nil || st.Failures != 0 {
		t.Fatalf("status %+v, want the fetched bundle, a refresh time and no failure", st)
	}

	t.Log("the endpoint answers garbage: refused, counted, stored; the good bundle stays")
	garbage.Store(true)
	wait("failure stored", func() bool { s := stored(); return s.Failures > 0 && s.LastError != "" && s.Bundle == st.Bundle })
	if !inForce(f, both)() {
		t.Fatalf("bundles %v after garbage, want the good one kept", f.Bundles())
	}
	if n := refusedCount(t, reg, foreignTD.Name(), foreign.Garbage); n < 1 {
		t.Errorf("refused{garbage} = %v, want at least 1", n)
	}

	t.Log("a restarted CA trusts what was stored, the endpoint still answering garbage")
	again := start(prometheus.NewRegistry())
	wait("stored bundle in force after a restart", inForce(again, both))
}

// refusedCount reads meshid_ca_foreign_bundle_refused_total{trust_domain, reason}.
func refusedCount(t *testing.T, reg *prometheus.Registry, td string, reason foreign.Reason) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshid_ca_foreign_bundle_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["trust_domain"] == td && labels["reason"] == string(reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
