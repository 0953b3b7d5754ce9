package ca

import (
	"crypto/x509"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/meshid/meshid/ca/source"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/upstream"
)

// Upstream results, the label of meshid_ca_upstream_requests_total.
const (
	upstreamOK      = "ok"      // the intermediate is in force
	upstreamRefused = "refused" // the upstream answered; the answer was refused
	upstreamFailed  = "failed"  // no answer (down, TLS, 4xx/5xx, a key that would not make a CSR)
)

// newRenewer makes the Renewer that gets this replica's intermediate from
// cfg.Upstream: its own key (memory, or the HSM key of IssuerKey), each
// intermediate swapped into the store through its checks, every attempt
// reported.
func (s *Service) newRenewer() (*upstream.Renewer, error) {
	var keys upstream.KeySource = upstream.MemoryKeys{}
	if s.cfg.IssuerKey != nil {
		where, _, _ := strings.Cut(s.cfg.IssuerKeyURI, ":")
		keys = upstream.StaticKey{Key: s.cfg.IssuerKey, Where: where}
	}
	return upstream.NewRenewer(upstream.Config{
		Authority: s.cfg.Upstream, Keys: keys, TTL: s.cfg.IssuerTTL,
		Use: func(kp *issuer.KeyPair, _ []*x509.Certificate) error {
			// The store verifies it against the bundle, which must carry
			// the upstream's root: one that does not is held back.
			_, err := s.store.SetIssuerKeyPair(kp)
			return err
		},
		Observe: s.observeUpstream,
		Clock:   s.cfg.Clock, Log: s.cfg.Log,
	})
}

// observeUpstream counts an attempt and reports it like any issuer update:
// reload metrics, the fleet report's record, and an Event.
func (s *Service) observeUpstream(a upstream.Attempt) {
	result := upstreamOK
	switch {
	case a.Err != nil && a.Refused:
		result = upstreamRefused
	case a.Err != nil:
		result = upstreamFailed
	}
	defer func() { s.lastUpstream = result }()
	s.metrics.upstreamRequests.WithLabelValues(result).Inc()
	s.metrics.upstreamLatency.Observe(a.Duration.Seconds())
	from := s.cfg.Upstream.Describe()
	st := s.renewer.Status()
	switch result {
	case upstreamOK:
		s.metrics.reload("issuer", true, nil)
		s.updates.applied(source.Issuer, from, "", nil)
		s.event(corev1.EventTypeNormal, "IssuerRenewed", "meshid-ca replica %s put a new intermediate from %s in force (not after %s)", s.cfg.Replica, from, st.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	case upstreamRefused:
		s.metrics.reload("issuer", false, a.Err)
		s.updates.applied(source.Issuer, from, "", a.Err)
		s.event(corev1.EventTypeWarning, "IssuerRefused", "meshid-ca replica %s refused the intermediate %s returned and keeps the last good one in force: %v", s.cfg.Replica, from, a.Err)
	default:
		// Not an update refused: the fleet report's Upstream carries it
		// (meshid check's upstream row), and the intermediate in force
		// stays as it is.
		if s.lastUpstream != upstreamFailed { // the first of a row; the log has every one
			s.event(corev1.EventTypeWarning, "UpstreamUnreachable", "meshid-ca replica %s cannot renew its intermediate from %s and keeps the one in force (%s left): %v", s.cfg.Replica, from, st.TimeToOutage(s.cfg.Clock.Now()).Round(1e9), a.Err)
		}
	}
}

// event records an Event about this replica's pod (the Deployment names
// the replica after it), when an Event recorder runs.
func (s *Service) event(kind, reason, format string, args ...any) {
	rec, _ := s.recorder.Load().(record.EventRecorder)
	if rec == nil {
		return
	}
	rec.Eventf(&corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: s.cfg.Namespace, Name: s.cfg.Replica}, kind, reason, format, args...)
}

// renewerCollector reports the Renewer's Status as gauges.
type renewerCollector struct{ r *upstream.Renewer }

func (c renewerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upstreamUpDesc, upstreamFailuresDesc, upstreamLastDesc, upstreamNextDesc, upstreamNotAfterDesc} {
		ch <- d
	}
}

func (c renewerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Status()
	up := 0.0
	if st.Reachable {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(upstreamUpDesc, prometheus.GaugeValue, up, st.Upstream)
	ch <- prometheus.MustNewConstMetric(upstreamFailuresDesc, prometheus.GaugeValue, float64(st.Failures), st.Upstream)
	for d, t := range map[*prometheus.Desc]int64{upstreamLastDesc: st.LastRenewal.Unix(), upstreamNextDesc: st.NextRenewal.Unix(), upstreamNotAfterDesc: st.NotAfter.Unix()} {
		if t > 0 {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(t), st.Upstream)
		}
	}
}
