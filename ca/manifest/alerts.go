package manifest

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// rule is one Prometheus alerting rule.
type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

// alertRules are the alerts: what `meshid check` says, paged. Each one has
// a promtool test in testdata/alerts_test.yaml (TestAlertRules). Their
// descriptions name commands that run as printed, in the install's
// namespace, as `meshid check`'s hints do.
func alertRules(o Options) []ruleGroup {
	ns := o.Namespace
	check := "`meshid check -n " + ns + "`"
	rotate := "`meshid rotate-anchor start --generate --write-anchor-key new-anchor.key -n " + ns + "`"
	if o.CertManager != nil {
		rotate = "`meshid rotate-anchor start --cert-manager --new-anchor-cert anchor.crt --new-anchor-key anchor.key -n " + ns + "` (a new anchor and its key made by your PKI)"
	}
	// A proxy renews its certificate at 50 to 70 % of its life, so one with
	// less than a quarter left has failed to renew; an hour at most, so
	// that day-long leaves page with an hour to go, as before, and an hour-
	// long leaf does not page at birth.
	leafLeft := min(time.Hour, o.LeafTTL/4)
	leafLeftText := "an hour"
	if leafLeft < time.Hour {
		leafLeftText = strings.Replace(leafLeft.Round(time.Second).String(), "m0s", "m", 1) // 15m, 2m30s
	}
	return []ruleGroup{{Name: "meshid-expiry", Rules: []rule{
		{
			Alert: "MeshidAnchorExpiringSoon", For: "1h",
			Expr:        `min by (fingerprint, subject) (meshid_ca_anchor_expiry_timestamp_seconds) - time() < 60 * 86400`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "meshid trust anchor {{ $labels.subject }} expires in less than 60 days", "description": "Rotate it with no downtime: " + rotate + " (see first what it would do: `meshid rotate-anchor plan -n " + ns + "`). Check with: " + check + "."},
		},
		{
			Alert: "MeshidAnchorExpiringVerySoon", For: "10m",
			Expr:        `min by (fingerprint, subject) (meshid_ca_anchor_expiry_timestamp_seconds) - time() < 7 * 86400`,
			Labels:      map[string]string{"severity": "critical"},
			Annotations: map[string]string{"summary": "meshid trust anchor {{ $labels.subject }} expires in less than 7 days", "description": "When it expires every workload certificate stops verifying. Rotate now: " + rotate + "."},
		},
		{
			Alert: "MeshidIssuerExpiringSoon", For: "10m",
			Expr:        `min by (fingerprint, subject) (meshid_ca_issuer_expiry_timestamp_seconds) - time() < 12 * 3600`,
			Labels:      map[string]string{"severity": "critical"},
			Annotations: map[string]string{"summary": "the meshid issuer {{ $labels.subject }} expires in less than 12 hours", "description": "It should have been renewed (cert-manager renews it 25 h before expiry). See why: " + check + "."},
		},
		{
			Alert: "MeshidUpdateRefused", For: "15m",
			Expr:        `max by (material) (meshid_ca_update_refused) == 1`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "meshid-ca refuses the new {{ $labels.material }} and keeps the last good one", "description": "See why: " + check + ", and the Warning Events: `kubectl -n " + ns + " get events --field-selector type=Warning`."},
		},
		{
			Alert: "MeshidWorkloadCertificateExpiring", For: "5m",
			Expr:        fmt.Sprintf(`meshid_proxy_certificate_expiry_timestamp_seconds - time() < %d`, int(leafLeft.Seconds())),
			Labels:      map[string]string{"severity": "critical"},
			Annotations: map[string]string{"summary": "the certificate of {{ $labels.spiffe_id }} expires in less than " + leafLeftText, "description": "Its proxy cannot renew (it renews at half to 70 % of the certificate's life): see its log, meshid-ca's, and " + check + "."},
		},
		{
			Alert: "MeshidRenewalsFailing", For: "15m",
			Expr:        `increase(meshid_proxy_renewals_total{result="failed"}[15m]) > 3`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "meshid-proxy renewals are failing", "description": "The current certificates stay in use until they expire; see the proxy and CA logs."},
		},
		{
			// Any increase: the CA keeps both entries, so a forged report
			// can hold a rotation back (docs/ca.md, status reports).
			Alert:       "MeshidFleetInstanceConflict",
			Expr:        `increase(meshid_ca_fleet_instance_conflicts_total[1h]) > 0`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "two identities report the same meshid-proxy instance", "description": "One of them may be forging status reports. meshid-ca's warning log line names both; " + check + " lists the fleet."},
		},
	}}, {Name: "meshid-jwt", Rules: jwtAlertRules(ns)}}
}

// jwtAlertRules: the JWT-SVID signing keys (meshid-ca --jwt-key-secret);
// without it their metrics do not exist and the rules never fire.
func jwtAlertRules(ns string) []rule {
	logs := "`kubectl -n " + ns + " logs deploy/" + CAName + " | grep 'jwt signing keys'`"
	return []rule{
		{
			Alert: "MeshidJWTNoSigningKey", For: "5m",
			Expr:        `meshid_ca_jwt_key_active_not_after_seconds == 0`,
			Labels:      map[string]string{"severity": "critical"},
			Annotations: map[string]string{"summary": "meshid-ca {{ $labels.pod }} has no JWT signing key in force", "description": "Every FetchJWTSVID fails until it has one. It reads and writes Secret " + JWTKeySecret + ": see why with " + logs + "."},
		},
		{
			Alert: "MeshidJWTKeySyncFailing", For: "15m",
			Expr:        `sum by (pod) (increase(meshid_ca_jwt_key_sync_total{result="failed"}[15m])) > 0 unless sum by (pod) (increase(meshid_ca_jwt_key_sync_total{result="ok"}[15m])) > 0`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "meshid-ca {{ $labels.pod }} cannot read or update its JWT signing keys", "description": "It keeps the keys in force, but makes no successor: the active key will end with none to follow. See why: " + logs + "."},
		},
		{
			// The successor is published --jwt-key-publish-lead (6 h by
			// default) before the active key ends; 10 minutes before, one
			// key alone is published.
			Alert: "MeshidJWTKeyNotRotating", For: "5m",
			Expr:        `(meshid_ca_jwt_key_active_not_after_seconds > 0) - time() < 600 and on (pod) meshid_ca_jwt_keys_published < 2`,
			Labels:      map[string]string{"severity": "warning"},
			Annotations: map[string]string{"summary": "the JWT signing key of meshid-ca {{ $labels.pod }} ends within 10 minutes and no successor is published", "description": "JWT-SVIDs stop when it ends. See why: " + logs + "."},
		},
	}
}

// alerts renders the rules as a ConfigMap holding a Prometheus rule file,
// or as a Prometheus Operator PrometheusRule.
func alerts(o Options, meta func(string) metav1.ObjectMeta) []runtime.Object {
	groups := alertRules(o)
	if o.PrometheusOperator {
		m := meta(AlertsConfigMap)
		spec, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&struct {
			Groups []ruleGroup `json:"groups"`
		}{groups})
		u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
		u.SetAPIVersion("monitoring.coreos.com/v1")
		u.SetKind("PrometheusRule")
		u.SetName(m.Name)
		u.SetNamespace(m.Namespace)
		u.SetLabels(m.Labels)
		return []runtime.Object{u}
	}
	file, _ := yaml.Marshal(map[string]any{"groups": groups})
	return []runtime.Object{&corev1.ConfigMap{
		TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: meta(AlertsConfigMap),
		Data: map[string]string{AlertsFile: string(file)},
	}}
}

// AlertsFile is the key of the rule file in the ConfigMap AlertsConfigMap.
const AlertsFile = "meshid-alerts.yaml"
