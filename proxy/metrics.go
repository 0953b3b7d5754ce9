package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshid/meshid/proxy/state"
)

// metrics are the proxy's Prometheus metrics, on a registry of their own.
type metrics struct {
	registry *prometheus.Registry

	connections *prometheus.CounterVec // direction
	active      *prometheus.GaugeVec   // direction
	bytes       *prometheus.CounterVec // direction, flow (to_peer, from_peer)
	forwarded   *prometheus.CounterVec // direction, mesh, transport, peer_id
	handshake   *prometheus.CounterVec // direction, reason
	denials     *prometheus.CounterVec // port, peer_id
	renewals    *prometheus.CounterVec // result
	policy      *prometheus.CounterVec // result
	bundles     *prometheus.CounterVec // source, result
	skew        prometheus.Gauge

	// Ports with request rules: requests by result (allowed, denied,
	// audited); denied and audited ones by policy, rule, reason (bounded:
	// the policies' own names, never a peer's).
	requests, requestsDenied, requestsAudited *prometheus.CounterVec
}

func newMetrics(store *state.Store) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_connections_total", Help: "Connections accepted, by direction (inbound, outbound).",
		}, []string{"direction"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_proxy_connections_active", Help: "Connections open now, by direction.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_bytes_total", Help: "Bytes forwarded, by direction and flow (to_peer: towards the remote side).",
		}, []string{"direction", "flow"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_forwarded_total",
			Help: "Connections set up and forwarded, by direction, mesh (meshed: the peer is a meshid proxy; unmeshed), transport (tls1.3, plain) and the peer's SPIFFE ID (empty in plain).",
		}, []string{"direction", "mesh", "transport", "peer_id"}),
		handshake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_handshake_failures_total", Help: "Connections refused or failed before forwarding, by direction and reason.",
		}, []string{"direction", "reason"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_policy_denials_total", Help: "Peers refused by policy, by inbound port and peer SPIFFE ID.",
		}, []string{"port", "peer_id"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_requests_total", Help: "Requests on ports with request rules, by result (allowed, denied, audited: denied by rules in audit mode and let through).",
		}, []string{"result"}),
		requestsDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_requests_denied_total", Help: "Requests refused by request rules, by the policy and rule that decided (rule empty: none names the caller) and reason.",
		}, []string{"policy", "rule", "reason"}),
		requestsAudited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_requests_audited_total", Help: "Requests request rules in audit mode would have refused and let through, by policy, rule and reason.",
		}, []string{"policy", "rule", "reason"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_renewals_total", Help: "Certificate renewal attempts, by result (ok, failed).",
		}, []string{"result"}),
		policy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_policy_reloads_total", Help: "Policy file loads, by result (ok, refused).",
		}, []string{"result"}),
		bundles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_proxy_bundle_updates_total", Help: "Trust bundle updates, by source (file, ca; ca_jwt: the JWT-SVID keys) and result (ok, unchanged, refused).",
		}, []string{"source", "result"}),
		skew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_proxy_clock_skew_seconds", Help: "How far the CA's clock was ahead of this proxy's at the last certificate (negative: behind).",
		}),
	}
	for _, d := range []string{"inbound", "outbound"} {
		m.connections.WithLabelValues(d)
		m.active.WithLabelValues(d)
	}
	for _, r := range []string{"ok", "failed"} {
		m.renewals.WithLabelValues(r)
	}
	m.registry.MustRegister(m.connections, m.active, m.forwarded, m.bytes, m.handshake, m.denials, m.requests, m.requestsDenied, m.requestsAudited, m.renewals, m.policy, m.bundles, m.skew,
		&stateCollector{store: store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var (
	certExpiryDesc = prometheus.NewDesc("meshid_proxy_certificate_expiry_timestamp_seconds",
		"NotAfter of the workload certificate in use, as a Unix time.", []string{"spiffe_id"}, nil)
	renewAfterDesc = prometheus.NewDesc("meshid_proxy_certificate_renew_timestamp_seconds",
		"When the current certificate will be renewed, as a Unix time.", nil, nil)
	bundleInfoDesc = prometheus.NewDesc("meshid_proxy_bundle_info",
		"The trust bundle in use (value 1), labelled by its SHA-256.", []string{"sha256"}, nil)
)

// stateCollector reads gauges from the current snapshot.
type stateCollector struct{ store *state.Store }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- renewAfterDesc
	ch <- bundleInfoDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.store.Load()
	if snap.SVID != nil {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue,
			float64(snap.SVID.Certificates[0].NotAfter.Unix()), snap.SVID.ID.String())
		ch <- prometheus.MustNewConstMetric(renewAfterDesc, prometheus.GaugeValue, float64(snap.RenewAfter.Unix()))
	}
	if snap.Bundle != nil {
		ch <- prometheus.MustNewConstMetric(bundleInfoDesc, prometheus.GaugeValue, 1, snap.Bundle.SHA256())
	}
}
