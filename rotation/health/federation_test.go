package health_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

// TestFederatedRows: a row per FederatedTrustDomain with its last refresh,
// age, anchors' expiry (in the time to outage when earliest) and refused
// fetches; never fetched, stale, failing, expiring and bundle-less
// domains each say so.
func TestFederatedRows(t *testing.T) {
	now := time.Now()
	year := 365 * 24 * time.Hour
	anchor := ca(t, nil, "anchor", now.Add(-time.Hour), year)
	good := ca(t, anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	foreignTD := spiffeid.RequireTrustDomainFromString("b.example")
	doc := func(anchors ...*issuer.KeyPair) string {
		var certs []*x509.Certificate
		for _, a := range anchors {
			certs = append(certs, a.Cert)
		}
		data, err := spiffebundle.FromX509Authorities(foreignTD, certs).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	soon := ca(t, nil, "b soon", now.Add(-year), year+time.Hour) // expires in an hour, before the issuer
	far := ca(t, nil, "b far", now.Add(-time.Hour), year)
	expired := ca(t, nil, "b expired", now.Add(-2*year), year)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	ftd := func(st v1alpha1.FederatedTrustDomainStatus, initial string) v1alpha1.FederatedTrustDomain {
		return v1alpha1.FederatedTrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "b"},
			Spec: v1alpha1.FederatedTrustDomainSpec{TrustDomain: foreignTD.Name(), InitialBundle: initial}, Status: st}
	}
	for _, tc := range []struct {
		name   string
		ftd    v1alpha1.FederatedTrustDomain
		status health.Status
		detail []string
		outage bool // the foreign anchor is the time to outage
	}{
		{"fresh", ftd(v1alpha1.FederatedTrustDomainStatus{Bundle: doc(far), LastRefresh: at(time.Minute)}, ""), health.OK, []string{"last refresh", "1m0s ago", "1 anchors from the stored bundle"}, false},
		{"expiring first", ftd(v1alpha1.FederatedTrustDomainStatus{Bundle: doc(far, soon), LastRefresh: at(time.Minute)}, ""), health.Warn, []string{"2 anchors"}, true},
		{"never fetched", ftd(v1alpha1.FederatedTrustDomainStatus{}, string(far.CertPEM())), health.Warn, []string{"never fetched", "initial bundle"}, false},
		{"stale", ftd(v1alpha1.FederatedTrustDomainStatus{Bundle: doc(far), LastRefresh: at(3 * time.Hour)}, ""), health.Warn, []string{"3h00m ago", "older than 2h00m"}, false},
		{"failing", ftd(v1alpha1.FederatedTrustDomainStatus{Bundle: doc(far), LastRefresh: at(time.Minute), Failures: 3, LastError: "foreign: garbage: not a bundle"}, ""), health.Warn, []string{"3 refused fetches", "foreign: garbage"}, false},
		{"expired anchor", ftd(v1alpha1.FederatedTrustDomainStatus{Bundle: doc(expired), LastRefresh: at(time.Minute)}, ""), health.Fail, []string{"1 anchors"}, true},
		{"no bundle", ftd(v1alpha1.FederatedTrustDomainStatus{}, ""), health.Fail, []string{"never fetched, and no spec.initialBundle"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, now, []*issuer.KeyPair{anchor}, good)
			in.Federated = &health.Federated{Items: []v1alpha1.FederatedTrustDomain{tc.ftd}}
			r := health.Run(in)
			got := row(t, r, "federated trust domain b.example")
			if got.Status != tc.status {
				t.Errorf("status %s, want %s: %s", got.Status, tc.status, got.Detail)
			}
			for _, d := range tc.detail {
				if !strings.Contains(got.Detail, d) {
					t.Errorf("detail %q does not say %q", got.Detail, d)
				}
			}
			if got.Status != health.OK && !strings.Contains(got.Hint, "`kubectl get federatedtrustdomain b -o yaml`") {
				t.Errorf("hint %q does not name the command", got.Hint)
			}
			if foreign := strings.Contains(r.OutageWhat, "federated trust domain b.example"); foreign != tc.outage {
				t.Errorf("time to outage %s (%s); foreign anchor %v, want %v", r.Outage, r.OutageWhat, foreign, tc.outage)
			}
		})
	}
	t.Run("cannot list", func(t *testing.T) {
		in := input(t, now, []*issuer.KeyPair{anchor}, good)
		in.Federated = &health.Federated{Err: errors.New("forbidden")}
		if got := row(t, health.Run(in), "federated trust domains"); got.Status != health.Warn || !strings.Contains(got.Hint, "auth can-i list") {
			t.Errorf("row %+v", got)
		}
	})
}
