package health

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
)

// Status of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	// Skip: the check could not run because one it depends on failed; the
	// row's detail says which.
	Skip Status = "skip"
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
// be read (a missing ConfigMap, an unreachable proxy). Everything that is
// nil was not read, and has no row.
type Input struct {
	Now         time.Time
	TrustDomain spiffeid.TrustDomain

	// Namespace is meshid-ca's, Kubeconfig and Context the kubeconfig file
	// and context check was given (empty: the default): the hints' commands
	// name them, so that they run as printed. Empty Namespace leaves -n out.
	Namespace, Kubeconfig, Context string

	// Preflight is whether the cluster can be read at all; nil when not
	// checked (no rows).
	Preflight *Preflight

	// BundleName and IssuerName name the objects, for the rows;
	// BundleObject and IssuerObject are their names alone, for the hints
	// (empty: taken from BundleName and IssuerName).
	BundleName, IssuerName     string
	BundleObject, IssuerObject string
	// BundlePEM is the trust-bundle ConfigMap's ca-bundle.crt.
	BundlePEM []byte
	BundleErr error
	// IssuerCert and IssuerKey are the issuer Secret's tls.crt and tls.key.
	IssuerCert, IssuerKey []byte
	IssuerErr             error
	// IssuerRenewBefore is cert-manager's renewBefore for the issuer, or 0
	// when nothing renews it automatically.
	IssuerRenewBefore time.Duration
	// CertManager is what cert-manager holds for the issuer; nil when
	// cert-manager does not manage it.
	CertManager *CertManager

	// Reports are the CA replicas' fleet reports: what each has in force,
	// the updates it did not take, the proxies it serves. Nil when not
	// read: the trust rows then describe the Secret and the ConfigMap.
	Reports *Reports

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

	// JWT is the JWT-SVID key Secret; nil when not read or not there
	// (JWT-SVIDs off).
	JWT *JWTKeys
	// Federated are the FederatedTrustDomains; nil when not read (no
	// federation: no rows).
	Federated *Federated

	// CA is the CA Deployment; nil when not checked.
	CA *Replicas
	// Proxies are the proxies asked (--proxies), in order.
	Proxies []Proxy
}

// Reports are the replicas' fleet reports.
type Reports struct {
	// Name names them, for the row ("NS/meshid-fleet-*").
	Name string
	// All are every report read, live or stale.
	All []fleet.Report
	Err error
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
	// Mode is "transparent" or "explicit"; empty when the proxy does not
	// say (an older one).
	Mode string
	// Redirect is a transparent proxy's redirect as meshid-init read it
	// back; Discovery its destination cache (nil: not reported).
	Redirect  ProxyRedirect
	Discovery *ProxyDiscovery
}

// ProxyRedirect is a transparent pod's nftables redirect.
type ProxyRedirect struct {
	Present, Matching bool
	Problem           string
}

// ProxyDiscovery is a transparent proxy's destination cache.
type ProxyDiscovery struct {
	Fresh               bool
	LastUpdate, BrokeAt time.Time
}

// Report is every row and the headline.
type Report struct {
	Rows []Row `json:"checks"`
	// Outage is the earliest expiry of what is in use and does not renew
	// itself: the issuer in force and its chain, the anchors anything
	// chains to, the webhook's certificates, and leaves whose renewal is
	// overdue. OutageWhat names it; when Outage is zero, OutageWhat says
	// why it is unknown.
	Outage     time.Time `json:"time_to_outage_at,omitzero"`
	OutageWhat string    `json:"time_to_outage_of"`
	// Fleet is every proxy the CA replicas report, with its status.
	Fleet []ProxyStatus `json:"fleet,omitempty"`
}

// ProxyStatus is one reported proxy and what check makes of it.
type ProxyStatus struct {
	fleet.Proxy
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Worst returns the worst status of the report; skipped rows count for
// nothing (the row they depend on says what failed).
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

// checker is one run: the input, what it read of it, and the report.
type checker struct {
	in Input
	r  *Report

	// The objects, parsed: the ConfigMap's bundle, the Secret's issuer.
	cmBundle  *bundle.Bundle
	cmErr     error
	secret    *issuer.KeyPair
	secretErr error

	// What the live replicas have in force (empty without reports).
	live []fleet.Report
	view fleet.View
	// anchors of the bundle in force (or the ConfigMap's without reports);
	// bundleSHA its SHA-256.
	anchors   []anchorInfo
	bundleSHA string
	// issuers in force: one per distinct issuer the replicas sign with (or
	// the Secret's, without reports).
	issuers []inForce
	// proxyAnchors maps an anchor's fingerprint to the --proxies whose
	// chains end at it.
	proxyAnchors map[string][]string
}

// Run runs every check.
func Run(in Input) *Report {
	c := &checker{in: in, r: &Report{}, proxyAnchors: map[string][]string{}}
	if !c.preflight() {
		c.skipAll()
		return c.r
	}
	c.read()
	c.bundleRows()
	c.issuerRows()
	c.certManagerRows()
	if in.WebhookCAPEM != nil {
		c.add(c.webhookCA())
	}
	if in.WebhookCertPEM != nil {
		c.add(c.webhookCert())
	}
	if in.CA != nil {
		c.add(c.replicas())
	}
	c.reportRows()
	c.jwtRows()
	c.federationRows()
	for _, p := range in.Proxies {
		c.add(c.proxy(p))
	}
	if c.r.Outage.IsZero() && c.r.OutageWhat == "" {
		c.r.OutageWhat = "unknown: no issuer in force could be read"
	}
	return c.r
}

func (c *checker) add(row Row) { c.r.Rows = append(c.r.Rows, row) }

// expires makes t the time to outage if it is the earliest yet.
func (c *checker) expires(what string, t time.Time) {
	if c.r.Outage.IsZero() || t.Before(c.r.Outage) {
		c.r.Outage, c.r.OutageWhat = t, what
	}
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

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// short is a fingerprint as rows show it.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
