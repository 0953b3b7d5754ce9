// Package health owns the chain-health checks behind `meshid check`: given
// the trust bundle, the issuer, the CA's replicas and the proxies' live
// certificates as read from the cluster, it says row by row what is fine,
// what needs attention and what is broken, with a hint for each problem,
// and names the earliest expiry: the time to outage.
//
// Checks are pure functions of their Input (now included); reading the
// cluster is the caller's job. It imports issuer/ and bundle.
package health

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Row is one check's result.
type Row struct {
	Check   string     `json:"check"`
	Status  Status     `json:"status"`
	Detail  string     `json:"detail"`
	Hint    string     `json:"hint,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
}

// Input is what the checks look at. A field's Err is set when it could not
// be read (a missing ConfigMap, an unreachable proxy).
type Input struct {
	Now         time.Time
	TrustDomain spiffeid.TrustDomain

	// BundleName and IssuerName name the objects, for the rows.
	BundleName, IssuerName string
	BundlePEM              []byte
	BundleErr              error
	IssuerCert, IssuerKey  []byte
	IssuerErr              error
	// IssuerRenewBefore is cert-manager's renewBefore for the issuer, or 0
	// when nothing renews it automatically.
	IssuerRenewBefore time.Duration

	// WarnWithin: an anchor expiring sooner is a warning.
	WarnWithin time.Duration
	// IssuerWarnWithin: an issuer expiring sooner fails the check (it
	// should have been renewed). 0 means IssuerRenewBefore, or a third of
	// the issuer's lifetime when that is 0 too.
	IssuerWarnWithin time.Duration

	// WebhookCAPEM is meshid-webhook's CA certificate (it issues the
	// webhook's serving certificates); nil when the webhook is not installed.
	WebhookCAPEM []byte
	// WebhookCABundle is the caBundle of the injector configuration, to
	// check it is in sync; nil when not read.
	WebhookCABundle []byte
	// WebhookCertPEM is the webhook's serving certificate when cert-manager
	// issues it (Secret meshid-webhook-tls); nil otherwise (meshid-webhook
	// then re-mints its own at two thirds of its life).
	WebhookCertPEM []byte

	// CA is the CA Deployment; nil when not checked.
	CA *Replicas
	// Proxies are the proxies asked, in order.
	Proxies []Proxy
}

// Replicas describes the CA Deployment.
type Replicas struct {
	Name           string
	Desired, Ready int32
	Err            error
}

// Proxy is one proxy's live certificate, from its /identity.
type Proxy struct {
	Addr         string
	Chain        []*x509.Certificate
	BundleSHA256 string
	Err          error
}

// Report is every row and the headline.
type Report struct {
	Rows []Row `json:"checks"`
	// Outage is the earliest expiry across anchors, issuer and leaves;
	// OutageWhat names it. Zero when nothing could be read.
	Outage     time.Time `json:"time_to_outage_at"`
	OutageWhat string    `json:"time_to_outage_of"`
}

// Worst returns the worst status of the report.
func (r *Report) Worst() Status {
	worst := OK
	for _, row := range r.Rows {
		switch {
		case row.Status == Fail:
			return Fail
		case row.Status == Warn:
			worst = Warn
		}
	}
	return worst
}

// Run runs every check.
func Run(in Input) *Report {
	r := &Report{}
	add := func(row Row) { r.Rows = append(r.Rows, row) }
	expires := func(what string, t time.Time) {
		if r.Outage.IsZero() || t.Before(r.Outage) {
			r.Outage, r.OutageWhat = t, what
		}
	}

	anchors := checkBundle(in, add, expires)
	checkIssuer(in, anchors, add, expires)
	if in.WebhookCAPEM != nil {
		add(checkWebhook(in, expires))
	}
	if in.WebhookCertPEM != nil {
		add(checkWebhookCert(in, expires))
	}
	if in.CA != nil {
		add(checkReplicas(*in.CA))
	}
	for _, p := range in.Proxies {
		add(checkProxy(in, p, anchors, expires))
	}
	return r
}

func checkBundle(in Input, add func(Row), expires func(string, time.Time)) *bundle.Bundle {
	name := "bundle " + in.BundleName
	if in.BundleErr != nil {
		add(Row{Check: name, Status: Fail, Detail: in.BundleErr.Error(),
			Hint: "create the trust-bundle ConfigMap (key ca-bundle.crt) with `meshid install`, or point --trust-bundle at it"})
		return nil
	}
	b, err := bundle.Parse(in.BundlePEM)
	if err != nil {
		add(Row{Check: name, Status: Fail, Detail: err.Error(), Hint: "put PEM CA certificates only under key ca-bundle.crt; meshid-ca keeps the last good bundle meanwhile"})
		return nil
	}
	add(Row{Check: name, Status: OK, Detail: fmt.Sprintf("%d anchor(s), sha256 %.12s", len(b.Anchors()), b.SHA256())})
	for i, a := range b.Anchors() {
		t := a.NotAfter
		row := Row{Check: fmt.Sprintf("anchor %d %s", i, a.Subject.CommonName), Expires: &t}
		left := a.NotAfter.Sub(in.Now)
		switch {
		case in.Now.After(a.NotAfter):
			row.Status, row.Detail = Fail, "expired at "+a.NotAfter.UTC().Format(time.RFC3339)
			row.Hint = "nothing it signed verifies any more: run `meshid rotate-anchor --emergency`"
		case in.Now.Before(a.NotBefore):
			row.Status, row.Detail = Fail, "not valid before "+a.NotBefore.UTC().Format(time.RFC3339)
			row.Hint = "check the clocks, or the anchor's NotBefore"
		case left < in.WarnWithin:
			row.Status, row.Detail = Warn, fmt.Sprintf("expires in %s, within the %s warning window", days(left), days(in.WarnWithin))
			row.Hint = "rotate it now, with no downtime: `meshid rotate-anchor`"
		default:
			row.Status, row.Detail = OK, fmt.Sprintf("CA, valid for %s more", days(left))
		}
		add(row)
		expires(row.Check, a.NotAfter)
	}
	return b
}

func checkIssuer(in Input, anchors *bundle.Bundle, add func(Row), expires func(string, time.Time)) {
	name := "issuer " + in.IssuerName
	if in.IssuerErr != nil {
		add(Row{Check: name, Status: Fail, Detail: in.IssuerErr.Error(), Hint: "create the kubernetes.io/tls issuer Secret, with `meshid install` or cert-manager"})
		return
	}
	kp, err := issuer.Parse(in.IssuerCert, in.IssuerKey)
	if err != nil {
		add(Row{Check: name, Status: Fail, Detail: err.Error(), Hint: "tls.crt must be a CA certificate (issuer first) and tls.key its key"})
		return
	}
	t := kp.NotAfter()
	expires(name, t)
	row := Row{Check: name, Expires: &t}
	threshold := in.IssuerWarnWithin
	if threshold == 0 {
		threshold = in.IssuerRenewBefore
	}
	if threshold == 0 {
		threshold = kp.Cert.NotAfter.Sub(kp.Cert.NotBefore) / 3
	}
	left := t.Sub(in.Now)
	switch err := kp.Verify(anchors, in.Now); {
	case anchors == nil:
		row.Status, row.Detail, row.Hint = Fail, "cannot be checked without a trust bundle", "fix the bundle first"
	case errors.Is(err, issuer.ErrUntrusted):
		row.Status, row.Detail = Fail, "does not chain to any anchor of the bundle (an issuer from another anchor)"
		row.Hint = "certificates it signs will not verify: issue it from an anchor in the bundle, or add its anchor to the bundle first"
	case err != nil:
		row.Status, row.Detail, row.Hint = Fail, err.Error(), "install a valid issuer; meshid-ca keeps the last good one meanwhile"
	case left < threshold:
		row.Status, row.Detail = Fail, fmt.Sprintf("expires in %s, within %s", days(left), days(threshold))
		row.Hint = "it should have been renewed by now: check cert-manager's Certificate, or replace the Secret"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("CA, key matches, chains to the bundle, valid for %s more", days(left))
	}
	add(row)
}

func checkWebhook(in Input, expires func(string, time.Time)) Row {
	row := Row{Check: "webhook CA"}
	b, err := bundle.Parse(in.WebhookCAPEM)
	if err != nil {
		row.Status, row.Detail, row.Hint = Fail, err.Error(), "delete Secret meshid-webhook-ca and restart meshid-webhook: it makes a new one"
		return row
	}
	ca := b.Anchors()[0]
	t := ca.NotAfter
	row.Expires = &t
	expires(row.Check, t)
	left := t.Sub(in.Now)
	switch {
	case left <= 0:
		row.Status, row.Detail, row.Hint = Fail, "expired: the API server refuses the webhooks' certificates", "delete Secret meshid-webhook-ca and restart meshid-webhook"
	case in.WebhookCABundle != nil && string(in.WebhookCABundle) != string(in.WebhookCAPEM):
		row.Status, row.Detail, row.Hint = Fail, "the injector's caBundle is not the webhook CA", "meshid-webhook syncs it every minute: is it running, and allowed to update the webhook configurations?"
	case left < in.WarnWithin:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("expires in %s", days(left)), "delete Secret meshid-webhook-ca and restart meshid-webhook before then"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("valid for %s more, caBundle in sync", days(left))
	}
	return row
}

func checkWebhookCert(in Input, expires func(string, time.Time)) Row {
	row := Row{Check: "webhook certificate"}
	block, _ := pem.Decode(in.WebhookCertPEM)
	if block == nil {
		row.Status, row.Detail, row.Hint = Fail, "Secret meshid-webhook-tls holds no certificate", "check cert-manager's Certificate meshid-webhook-tls"
		return row
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		row.Status, row.Detail, row.Hint = Fail, err.Error(), "check cert-manager's Certificate meshid-webhook-tls"
		return row
	}
	t := c.NotAfter
	row.Expires = &t
	expires(row.Check, t)
	left, life := t.Sub(in.Now), c.NotAfter.Sub(c.NotBefore)
	switch {
	case left <= 0:
		row.Status, row.Detail, row.Hint = Fail, "expired: the API server cannot call the webhooks", "check cert-manager's Certificate meshid-webhook-tls"
	case left < life/4:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("expires in %s, past its renewal time", human(left)), "cert-manager has not renewed it: check the Certificate's status"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("valid for %s more", human(left))
	}
	return row
}

func checkReplicas(ca Replicas) Row {
	row := Row{Check: "ca replicas " + ca.Name}
	switch {
	case ca.Err != nil:
		row.Status, row.Detail, row.Hint = Warn, ca.Err.Error(), "install meshid-ca with `meshid install`, or pass --deployment"
	case ca.Ready == 0:
		row.Status, row.Detail, row.Hint = Fail, fmt.Sprintf("0 of %d ready", ca.Desired), "kubectl -n NAMESPACE describe deployment; workloads cannot renew certificates"
	case ca.Ready < ca.Desired:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("%d of %d ready", ca.Ready, ca.Desired), "a replica is not ready: kubectl describe its pod"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("%d of %d ready", ca.Ready, ca.Desired)
	}
	return row
}

func checkProxy(in Input, p Proxy, anchors *bundle.Bundle, expires func(string, time.Time)) Row {
	row := Row{Check: "proxy " + p.Addr}
	if p.Err != nil {
		row.Status, row.Detail, row.Hint = Fail, p.Err.Error(), "is meshid-proxy running with --admin-listen at that address?"
		return row
	}
	if len(p.Chain) == 0 {
		row.Status, row.Detail, row.Hint = Fail, "holds no certificate", "see its log: it cannot get one from meshid-ca"
		return row
	}
	leaf := p.Chain[0]
	t := leaf.NotAfter
	row.Expires = &t
	expires(row.Check, t)
	life, left := leaf.NotAfter.Sub(leaf.NotBefore), leaf.NotAfter.Sub(in.Now)
	var verr error
	if anchors != nil {
		_, _, verr = x509svid.Verify(p.Chain, anchors.X509Bundle(in.TrustDomain), x509svid.WithTime(in.Now))
	}
	switch {
	case in.Now.After(leaf.NotAfter):
		row.Status, row.Detail, row.Hint = Fail, "its certificate expired at "+leaf.NotAfter.UTC().Format(time.RFC3339), "it cannot renew: see its log and meshid-ca's"
	case anchors != nil && verr != nil:
		row.Status, row.Detail, row.Hint = Fail, "its certificate does not chain to the current bundle: "+verr.Error(), "peers with the current bundle refuse it; it renews at renew_after, or restart it"
	case left < life/4:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("its certificate expires in %s, past its renewal time", human(left)), "renewals are failing: see its log"
	case anchors != nil && p.BundleSHA256 != anchors.SHA256():
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("holds bundle %.12s, the cluster's is %.12s", p.BundleSHA256, anchors.SHA256()), "it has not loaded the current bundle yet"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("%s, valid for %s more", leaf.URIs[0], human(left))
	}
	return row
}

// days formats a duration in days when long, else hours and minutes.
func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return human(d)
}

func human(d time.Duration) string {
	if d < 0 {
		return "-" + human(-d)
	}
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return d.Round(time.Second).String()
}
