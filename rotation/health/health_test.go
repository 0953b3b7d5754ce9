package health_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
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
	t.Run("expired anchor nothing uses", func(t *testing.T) {
		old := ca(t, nil, "old anchor", now.Add(-2*year), year)
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor, old}, good))
		got := row(t, r, "anchor 1")
		if got.Status != health.Fail || !strings.Contains(got.Detail, "expired") || !strings.Contains(got.Detail, "nothing uses it") ||
			!strings.Contains(got.Hint, bundle.Fingerprint(old.Cert)) || strings.Contains(got.Hint, "--emergency") {
			t.Fatalf("row %+v, want a failure naming the anchor to remove", got)
		}
		if !strings.Contains(got.Check, "("+bundle.Fingerprint(old.Cert)[:12]+")") {
			t.Fatalf("row %q does not name the anchor's fingerprint", got.Check)
		}
		if !r.Outage.Equal(good.NotAfter()) {
			t.Fatalf("time to outage %s (%s): an anchor nothing uses is no outage", r.Outage, r.OutageWhat)
		}
	})
	t.Run("expired anchor the issuer chains to", func(t *testing.T) {
		old := ca(t, nil, "old anchor", now.Add(-2*year), year)
		orphan := ca(t, old, "orphan", now.Add(-time.Hour), 48*time.Hour) // valid; its anchor is not
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor, old}, orphan))
		if got := row(t, r, "anchor 1"); got.Status != health.Fail || !strings.Contains(got.Detail, "used by the issuer in the Secret") || !strings.Contains(got.Hint, "rotate-anchor start --emergency") {
			t.Fatalf("row %+v", got)
		}
		if got := row(t, r, "issuer"); got.Status != health.Fail || !strings.Contains(got.Detail, "its anchor "+bundle.Fingerprint(old.Cert)[:12]+" expired") {
			t.Fatalf("issuer row %+v", got)
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

// TestPreflight: a failed preflight is one failing row, and every row that
// depends on it is skipped and says so; without a Preflight there are no
// preflight rows (rotation/anchor's use).
func TestPreflight(t *testing.T) {
	now := time.Now()
	anchor := ca(t, nil, "anchor", now.Add(-time.Hour), 365*24*time.Hour)
	good := ca(t, anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	tests := []struct {
		name      string
		preflight *health.Preflight
		fail      string // the one failing row
		skipped   string // what the skipped rows say
	}{
		{name: "API server down", preflight: &health.Preflight{APIErr: errors.New("connection refused")}, fail: "api server", skipped: "the API server cannot be reached"},
		{name: "namespace missing", preflight: &health.Preflight{NamespaceMissing: true}, fail: "namespace meshid", skipped: "namespace meshid does not exist"},
		{name: "forbidden", preflight: &health.Preflight{Access: []health.Access{
			{Verb: "get", Resource: "configmaps", Name: "b", Need: health.NeedBundle},
			{Verb: "get", Resource: "secrets", Name: "i", Need: health.NeedIssuer},
		}}, fail: "rbac", skipped: "not allowed to get "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(t, now, []*issuer.KeyPair{anchor}, good)
			in.Namespace, in.Preflight = "meshid", tt.preflight
			in.Reports = &health.Reports{Name: "meshid/meshid-fleet-*"}
			r := health.Run(in)
			var failed []string
			for _, row := range r.Rows {
				switch row.Status {
				case health.Fail:
					failed = append(failed, row.Check)
				case health.Skip:
					if !strings.Contains(row.Detail, tt.skipped) {
						t.Errorf("skipped row %+v does not say %q", row, tt.skipped)
					}
				}
			}
			if len(failed) != 1 || failed[0] != tt.fail || r.Worst() != health.Fail {
				t.Fatalf("failing rows %q, want only %q: %+v", failed, tt.fail, r.Rows)
			}
			for _, name := range []string{"bundle", "issuer"} {
				if got := row(t, r, name); got.Status != health.Skip || got.Hint != "" {
					t.Errorf("%s row %+v, want skipped without a hint", name, got)
				}
			}
		})
	}
	t.Run("not checked", func(t *testing.T) {
		r := health.Run(input(t, now, []*issuer.KeyPair{anchor}, good))
		for _, row := range r.Rows {
			if row.Check == "api server" || row.Check == "rbac" || strings.HasPrefix(row.Check, "namespace") {
				t.Fatalf("a preflight row without a Preflight: %+v", row)
			}
		}
	})
}

// report is what a replica signing with iss over anchors publishes.
func report(replica string, now time.Time, iss *issuer.KeyPair, anchors ...*issuer.KeyPair) fleet.Report {
	var certs []*x509.Certificate
	for _, a := range anchors {
		certs = append(certs, a.Cert)
	}
	b, _ := bundle.New(certs...)
	expiry, _ := iss.ChainExpiry(b, now)
	r := fleet.Report{Replica: replica, Updated: now, IssuerSHA256: iss.Fingerprint(), BundleSHA256: b.SHA256(), AnchorsTotal: len(certs),
		Issuer: &fleet.Issuer{Subject: iss.Cert.Subject.String(), NotBefore: iss.Cert.NotBefore, NotAfter: iss.NotAfter(), ChainNotAfter: expiry, AnchorSHA256: bundle.Fingerprint(anchors[0].Cert)}}
	for _, a := range certs {
		r.Anchors = append(r.Anchors, fleet.Anchor{SHA256: bundle.Fingerprint(a), NotAfter: a.NotAfter})
	}
	return r
}

// TestInForce: with replicas reporting, the issuer row and the time to
// outage are the issuer in force, and a refused update in the Secret is a
// failing row of its own.
func TestInForce(t *testing.T) {
	now := time.Now()
	year := 365 * 24 * time.Hour
	anchor := ca(t, nil, "anchor", now.Add(-time.Hour), year)
	inForce := ca(t, anchor, "in force", now.Add(-time.Hour), 90*24*time.Hour)
	expired := ca(t, anchor, "expired", now.Add(-50*time.Hour), 48*time.Hour)

	in := input(t, now, []*issuer.KeyPair{anchor}, expired) // the Secret
	rep := report("a", now, inForce, anchor)
	rep.Updates = []fleet.Update{{Material: "issuer", Source: "Secret meshid/issuer", Status: fleet.UpdateRefused, SHA256: expired.Fingerprint(), Reason: "issuer: expired", Since: now.Add(-time.Minute)}}
	in.Reports = &health.Reports{Name: "fleet", All: []fleet.Report{rep, report("dead", now.Add(-time.Hour), expired, anchor)}}
	r := health.Run(in)
	if got := row(t, r, "issuer meshid/issuer"); got.Status != health.OK || !strings.Contains(got.Detail, "in force on 1 of 1 replicas: CN=in force") || !got.Expires.Equal(inForce.NotAfter()) {
		t.Fatalf("issuer row %+v, want the issuer in force (a stale report ignored)", got)
	}
	if got := row(t, r, "issuer update"); got.Status != health.Fail || !strings.Contains(got.Detail, "refused by 1 of 1 replicas") || !strings.Contains(got.Hint, "kubectl") {
		t.Fatalf("update row %+v", got)
	}
	if !r.Outage.Equal(inForce.NotAfter()) || r.OutageWhat != "issuer meshid/issuer in force" {
		t.Fatalf("time to outage %s (%s), want the issuer in force's %s", r.Outage, r.OutageWhat, inForce.NotAfter())
	}
}

// TestUpstream: replicas whose issuer comes from step-ca, each with its own
// intermediate and no issuer Secret: no failure for the missing Secret or
// the two issuers, one upstream row per replica (reachable, renewals, life
// left, key location), a warning while renewals fail and a failure once
// the intermediate expired.
func TestUpstream(t *testing.T) {
	now := time.Now()
	root := ca(t, nil, "step-ca root", now.Add(-time.Hour), 365*24*time.Hour)
	a := ca(t, root, "meshid issuer a", now.Add(-time.Hour), 48*time.Hour)
	b := ca(t, root, "meshid issuer b", now.Add(-2*time.Hour), 48*time.Hour)
	const up = "step-ca https://ca:9000 provisioner meshid"
	upstreamOf := func(kp *issuer.KeyPair) *fleet.Upstream {
		return &fleet.Upstream{Upstream: up, KeyLocation: "memory", Reachable: true, LastRenewal: kp.Cert.NotBefore, NextRenewal: kp.Cert.NotBefore.Add(24 * time.Hour), NotAfter: kp.NotAfter()}
	}
	in := input(t, now, []*issuer.KeyPair{root}, a)
	in.IssuerCert, in.IssuerKey, in.IssuerErr = nil, nil, errors.New(`secrets "issuer" not found`)
	ra, rb := report("ca-a", now, a, root), report("ca-b", now, b, root)
	ra.Upstream, rb.Upstream = upstreamOf(a), upstreamOf(b)
	in.Reports = &health.Reports{Name: "fleet", All: []fleet.Report{ra, rb}}

	r := health.Run(in)
	if r.Worst() != health.OK {
		t.Fatalf("healthy upstream replicas: %+v", r.Rows)
	}
	if got := row(t, r, "upstream ca-a"); !strings.Contains(got.Detail, up+" reachable") || !strings.Contains(got.Detail, "key in memory") || !got.Expires.Equal(a.NotAfter()) {
		t.Fatalf("upstream row %+v", got)
	}

	t.Run("renewals failing", func(t *testing.T) {
		in := in
		rb := rb
		rb.Upstream = upstreamOf(b)
		rb.Upstream.Reachable, rb.Upstream.Failures, rb.Upstream.LastError = false, 3, "stepca: POST /1.0/sign: connection refused"
		in.Reports = &health.Reports{Name: "fleet", All: []fleet.Report{ra, rb}}
		r := health.Run(in)
		got := row(t, r, "upstream ca-b")
		if got.Status != health.Warn || !strings.Contains(got.Detail, "unreachable") || !strings.Contains(got.Detail, "3 renewal(s) failed") || !strings.Contains(got.Detail, "time to outage") || !strings.Contains(got.Hint, "kubectl") {
			t.Fatalf("upstream row %+v, want a warning with the failures and the time left", got)
		}
		if r.Worst() != health.Warn {
			t.Fatalf("an unreachable upstream with the intermediate valid: worst %s, want warn: %+v", r.Worst(), r.Rows)
		}
	})
	t.Run("answer refused", func(t *testing.T) {
		in := in
		rb := rb
		rb.Upstream = upstreamOf(b)
		rb.Upstream.Failures, rb.Upstream.LastError = 1, "upstream: refused the upstream's answer: CN=meshid issuer is not a CA (CA:FALSE)"
		rb.Updates = []fleet.Update{{Material: "issuer", Source: up, Status: fleet.UpdateRefused, Reason: rb.Upstream.LastError, Since: now.Add(-time.Minute)}}
		in.Reports = &health.Reports{Name: "fleet", All: []fleet.Report{ra, rb}}
		r := health.Run(in)
		u := row(t, r, "issuer update")
		if u.Status != health.Fail || !strings.Contains(u.Detail, "not a CA") || strings.Contains(u.Hint, "create secret") || !strings.Contains(u.Hint, "upstream rows") {
			t.Errorf("update row %+v, want a failure naming the refusal, its hint the upstream rows (an upstream issuer has no Secret)", u)
		}
	})
	t.Run("expired", func(t *testing.T) {
		in := in
		in.Now = b.NotAfter().Add(time.Minute)
		ra, rb := ra, rb
		ra.Updated, rb.Updated = in.Now, in.Now
		in.Reports = &health.Reports{Name: "fleet", All: []fleet.Report{ra, rb}}
		r := health.Run(in)
		if got := row(t, r, "upstream ca-b"); got.Status != health.Fail || !strings.Contains(got.Detail, "expired") {
			t.Fatalf("upstream row %+v, want a failure", got)
		}
	})
}
