package manifest

import (
	_ "embed"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// GrafanaConfigMap holds the Grafana dashboard, under GrafanaFile, labelled
// grafana_dashboard=1 so that the Grafana sidecar (kube-prometheus-stack's
// and the grafana chart's default) loads it; without one, import the JSON.
const (
	GrafanaConfigMap = "meshid-grafana-dashboard"
	GrafanaFile      = "meshid.json"
)

// GrafanaDashboard is the dashboard's JSON: the expiry of anchors, issuer
// and workload certificates (with the alerts' thresholds in the panels'
// descriptions), refused updates, issuance, renewals, policy denials and
// fleet reports, over a Prometheus data source chosen on import.
//
//go:embed grafana-dashboard.json
var GrafanaDashboard []byte

func grafana(meta func(string) metav1.ObjectMeta) runtime.Object {
	m := meta(GrafanaConfigMap)
	labels := map[string]string{"grafana_dashboard": "1"}
	for k, v := range m.Labels {
		labels[k] = v
	}
	m.Labels = labels
	return &corev1.ConfigMap{
		TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: m,
		Data: map[string]string{GrafanaFile: string(GrafanaDashboard)},
	}
}
