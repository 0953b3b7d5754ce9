package ca

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/issuer"
)

// Refusal reasons the server counts beside those of authn, csr and fleet.
const (
	// reasonTooLarge: the request was over MaxMessageSize, refused by gRPC
	// before it was read (Certify and ReportStatus).
	reasonTooLarge = "request_too_large"
	// reasonUnauthenticated: a status report without a client certificate
	// that verifies.
	reasonUnauthenticated = "unauthenticated"
	// reasonNoBundle: a status report before the CA has a bundle to verify
	// the client certificate with.
	reasonNoBundle = "no_bundle"
)

// Metrics are the CA's Prometheus metrics, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	issued      prometheus.Counter
	refused     *prometheus.CounterVec
	latency     prometheus.Histogram
	reloads     *prometheus.CounterVec
	refusedNow  *prometheus.GaugeVec
	cacheHits   prometheus.Counter
	bundleWatch prometheus.Gauge
	issuerKeyUp prometheus.Gauge
	// callerLimited counts what one caller was refused for holding too
	// much at once, by kind (connections, calls, streams).
	callerLimited *prometheus.CounterVec
	// fleetRefused counts refused status reports, by reason.
	fleetRefused *prometheus.CounterVec
	// fleetConflicts counts proxies whose first report names an instance
	// another identity's live proxy reports too.
	fleetConflicts prometheus.Counter
	// jwtIssued and jwtRefused count MintJWTSVID calls.
	jwtIssued  prometheus.Counter
	jwtRefused *prometheus.CounterVec
	// external counts JoinExternal and RenewExternal (external.go).
	external externalMetrics
}

// NewMetrics registers the CA's metrics, and gauges read from store, on a
// new registry.
func NewMetrics(store *trust.Store) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_certificates_issued_total",
			Help: "Workload certificates issued.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_certificates_refused_total",
			Help: "Certify requests refused, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshid_ca_certify_duration_seconds",
			Help:    "Time to answer a Certify request, refusals included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_reloads_total",
			Help: "Updates of the issuer or trust bundle, by what was updated (issuer, bundle) and result (ok, unchanged, refused).",
		}, []string{"material", "result"}),
		refusedNow: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_ca_update_refused",
			Help: "1 while the latest update of the issuer or bundle was refused (the last good one is in force), else 0.",
		}, []string{"material"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_token_review_cache_hits_total",
			Help: "Certify requests whose token review came from the cache.",
		}),
		callerLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_caller_limited_total",
			Help: "Connections, calls and streams refused because one caller (IP address) already held its limit, by kind.",
		}, []string{"kind"}),
		fleetRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_fleet_reports_refused_total",
			Help: "ReportStatus calls refused, by reason: a field out of bounds, an identity or the replica over its cap of proxy instances, no client certificate, a request too large.",
		}, []string{"reason"}),
		fleetConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_fleet_instance_conflicts_total",
			Help: "Proxies whose first status report named an instance that another identity's live proxy also reports: a forged report or a collision. Both are kept.",
		}),
		// HSM: whether the issuer key held outside the process signs.
		issuerKeyUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_ca_issuer_key_up",
			Help: "1 while the issuer key (--issuer-key) answers a test signature, 0 while its module or token does not (the CA is not ready); absent for a key in the issuer Secret.",
		}),
		jwtIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_jwt_svids_issued_total",
			Help: "JWT-SVIDs minted.",
		}),
		jwtRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_jwt_svids_refused_total",
			Help: "MintJWTSVID calls refused, by reason.",
		}, []string{"reason"}),
		bundleWatch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_ca_bundle_watchers",
			Help: "Open WatchBundle streams.",
		}),
	}
	for _, r := range []string{"ok", "unchanged", "refused"} {
		m.reloads.WithLabelValues("issuer", r)
		m.reloads.WithLabelValues("bundle", r)
	}
	for _, k := range []string{"connections", "calls", "streams"} {
		m.callerLimited.WithLabelValues(k)
	}
	for _, r := range fleet.Reasons {
		m.fleetRefused.WithLabelValues(string(r))
	}
	for _, r := range []string{reasonUnauthenticated, reasonNoBundle, reasonTooLarge} {
		m.fleetRefused.WithLabelValues(r)
	}
	m.refused.WithLabelValues(reasonTooLarge)
	for _, r := range jwtReasons {
		m.jwtRefused.WithLabelValues(r)
	}
	m.refusedNow.WithLabelValues("issuer")
	m.refusedNow.WithLabelValues("bundle")
	m.Registry.MustRegister(m.issued, m.refused, m.latency, m.reloads, m.refusedNow, m.cacheHits, m.bundleWatch, m.callerLimited, m.fleetRefused, m.fleetConflicts, m.jwtIssued, m.jwtRefused,
		m.issuerKeyUp,
		&trustCollector{store: store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.external = newExternalMetrics(m.Registry)
	return m
}

// reload counts one update of material ("issuer" or "bundle").
func (m *Metrics) reload(material string, changed bool, err error) {
	result, refused := "ok", 0.0
	switch {
	case err != nil:
		result, refused = "refused", 1
	case !changed:
		result = "unchanged"
	}
	m.reloads.WithLabelValues(material, result).Inc()
	m.refusedNow.WithLabelValues(material).Set(refused)
}

var (
	issuerExpiryDesc = prometheus.NewDesc("meshid_ca_issuer_expiry_timestamp_seconds",
		"NotAfter of the issuer in use, as a Unix time.", []string{"fingerprint", "subject"}, nil)
	anchorExpiryDesc = prometheus.NewDesc("meshid_ca_anchor_expiry_timestamp_seconds",
		"NotAfter of each trust anchor in the bundle, as a Unix time.", []string{"fingerprint", "subject"}, nil)
	bundleInfoDesc = prometheus.NewDesc("meshid_ca_bundle_info",
		"The trust bundle in use (value 1), labelled by its SHA-256.", []string{"sha256"}, nil)
)

// trustCollector reports expiry gauges from the current trust state, so a
// replaced anchor or issuer never leaves a stale series behind.
type trustCollector struct{ store *trust.Store }

func (c *trustCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- issuerExpiryDesc
	ch <- anchorExpiryDesc
	ch <- bundleInfoDesc
}

func (c *trustCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Load()
	if st.Issuer != nil {
		cert := st.Issuer.Certificate()
		ch <- prometheus.MustNewConstMetric(issuerExpiryDesc, prometheus.GaugeValue,
			float64(cert.NotAfter.Unix()), issuer.Fingerprint(st.Issuer), cert.Subject.String())
	}
	if st.Bundle != nil {
		ch <- prometheus.MustNewConstMetric(bundleInfoDesc, prometheus.GaugeValue, 1, st.Bundle.SHA256())
		for _, a := range st.Bundle.Anchors() {
			ch <- prometheus.MustNewConstMetric(anchorExpiryDesc, prometheus.GaugeValue,
				float64(a.NotAfter.Unix()), bundle.Fingerprint(a), a.Subject.String())
		}
	}
}
