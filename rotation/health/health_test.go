package health_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/rotation/health"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// ca makes an anchor (parent nil) or an intermediate of parent.
func ca(t *testing.T, parent *issuer.KeyPair, name string, nb time.Time, ttl time.Duration) *issuer.KeyPair {
	t.Helper()
	opts := []issuertest.Option{issuertest.Name(name), issuertest.NotBefore(nb), issuertest.TTL(ttl)}
	if parent == nil {
		return issuertest.Anchor(t, opts...)
	}
	return issuertest.Intermediate(t, parent, opts...)
}

func input(t *testing.T, now time.Time, anchors []*issuer.KeyPair, iss *issuer.KeyPair) health.Input {
	t.Helper()
	var certs []byte
	for _, a := range anchors {
		certs = append(certs, a.CertPEM()...)
	}
	return health.Input{
		Now: now, TrustDomain: td, BundleName: "meshid/bundle", IssuerName: "meshid/issuer",
		BundlePEM: certs, IssuerCert: iss.CertPEM(), IssuerKey: issuertest.KeyPEM(t, iss.Key), WarnWithin: 60 * 24 * time.Hour,
	}
}

// row returns the first row whose check starts with prefix.
func row(t *testing.T, r *health.Report, prefix string) health.Row {
	t.Helper()
	for _, row := range r.Rows {
		if strings.HasPrefix(row.Check, prefix) {
			return row
		}
	}
	t.Fatalf("no %q row in %+v", prefix, r.Rows)
	return health.Row{}
}

func TestRun(t *testing.T) {
	now := time.Now()
	year := 365 * 24 * time.Hour
	anchor := ca(t, nil, "anchor", now.Add(-time.Hour), year)
	good := ca(t, anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)

	t.Run("healthy", func(t *testing.T) {
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor}, good))
		if r.Worst() != health.OK {
			t.Fatalf("%+v", r.Rows)
		}
		if !r.Outage.Equal(good.NotAfter()) || !strings.HasPrefix(r.OutageWhat, "issuer") {
			t.Fatalf("time to outage %s (%s), want the issuer's expiry", r.Outage, r.OutageWhat)
		}
	})
	t.Run("expired anchor", func(t *testing.T) {
		old := ca(t, nil, "old anchor", now.Add(-2*year), year)
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor, old}, good))
		if got := row(t, r, "anchor 1"); got.Status != health.Fail || !strings.Contains(got.Detail, "expired") || got.Hint == "" {
			t.Fatalf("row %+v", got)
		}
	})
	t.Run("anchor within the warning window", func(t *testing.T) {
		soon := ca(t, nil, "soon", now.Add(-year), year+30*24*time.Hour)
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor, soon}, good))
		if got := row(t, r, "anchor 1"); got.Status != health.Warn {
			t.Fatalf("row %+v", got)
		}
		if r.Worst() != health.Warn {
			t.Fatal("a warning is not the worst status")
		}
	})
	t.Run("issuer from another anchor", func(t *testing.T) {
		stranger := ca(t, ca(t, nil, "stranger", now.Add(-time.Hour), year), "stranger issuer", now.Add(-time.Hour), 48*time.Hour)
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor}, stranger))
		if got := row(t, r, "issuer"); got.Status != health.Fail || !strings.Contains(got.Detail, "another anchor") {
			t.Fatalf("row %+v", got)
		}
	})
	t.Run("issuer within its threshold", func(t *testing.T) {
		// 48 h issuer with 10 h left: past a third of its lifetime.
		late := ca(t, anchor, "late", now.Add(-38*time.Hour), 48*time.Hour)
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor}, late))
		if got := row(t, r, "issuer"); got.Status != health.Fail || !strings.Contains(got.Detail, "within") {
			t.Fatalf("row %+v", got)
		}
		// With cert-manager renewing 5 h before, 10 h left is fine.
		in := input(t, now, []*issuer.KeyPair{anchor}, late)
		in.IssuerRenewBefore = 5 * time.Hour
		if got := row(t, health.Run(in), "issuer"); got.Status != health.OK {
			t.Fatalf("with renewBefore 5h: row %+v", got)
		}
	})
	t.Run("missing bundle", func(t *testing.T) {
		in := input(t, now, []*issuer.KeyPair{anchor}, good)
		in.BundlePEM, in.BundleErr = nil, errors.New("ConfigMap not found")
		r := health.Run(in)
		if got := row(t, r, "bundle"); got.Status != health.Fail || got.Hint == "" {
			t.Fatalf("row %+v", got)
		}
		if got := row(t, r, "issuer"); got.Status != health.Fail {
			t.Fatalf("an issuer checked against no bundle: %+v", got)
		}
	})
	t.Run("proxy with a certificate from another anchor", func(t *testing.T) {
		in := input(t, now, []*issuer.KeyPair{anchor}, good)
		b, _ := bundle.New(anchor.Cert)
		in.Proxies = []health.Proxy{{Addr: "a:1", Err: errors.New("connection refused")}, {Addr: "b:1", Chain: good.Certificates(), BundleSHA256: b.SHA256()}}
		r := health.Run(in)
		if got := row(t, r, "proxy a:1"); got.Status != health.Fail {
			t.Fatalf("unreachable proxy: %+v", got)
		}
		// good.Certificates() is a CA chain, not an SVID: it must not verify.
		if got := row(t, r, "proxy b:1"); got.Status != health.Fail {
			t.Fatalf("proxy with a non-SVID chain: %+v", got)
		}
	})
}
