package manifest_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/ca/manifest"
)

// TestGrafanaDashboard: install renders the dashboard in a ConfigMap the
// Grafana sidecar loads; every panel has a query, every query names only
// metrics meshid-ca and meshid-proxy export, and promtool parses each one
// (as a recording rule).
func TestGrafanaDashboard(t *testing.T) {
	objs, err := manifest.Render(manifest.Options{Image: "meshid-ca:test", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("cert"), IssuerKeyPEM: []byte("key")})
	if err != nil {
		t.Fatal(err)
	}
	var cm *corev1.ConfigMap
	for _, obj := range objs {
		if c, ok := obj.(*corev1.ConfigMap); ok && c.Name == manifest.GrafanaConfigMap {
			cm = c
		}
	}
	if cm == nil || cm.Labels["grafana_dashboard"] != "1" || cm.Data[manifest.GrafanaFile] == "" {
		t.Fatalf("no ConfigMap %s labelled grafana_dashboard=1 with %s: %v", manifest.GrafanaConfigMap, manifest.GrafanaFile, cm)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data[manifest.GrafanaFile]), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	if dash.UID == "" || len(exprs) == 0 {
		t.Fatalf("the dashboard has no uid or no queries")
	}
	exported := exportedMetrics(t)
	for _, e := range exprs {
		for _, m := range metricNames(e) {
			if !exported[m] {
				t.Errorf("query %q: meshid exports no metric %s", e, m)
			}
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool not found: install Debian package prometheus (.ci/run does) to parse the queries")
		}
		t.Fatal("promtool not found: install Debian package prometheus (.ci/run does)")
	}
	var rules []map[string]string
	for i, e := range exprs {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("meshid:grafana:query%d", i), "expr": e})
	}
	file, _ := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "grafana", "rules": rules}}})
	path := filepath.Join(t.TempDir(), "queries.yaml")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}

// TestAlertMetricsExported: every alert names only metrics meshid exports.
func TestAlertMetricsExported(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string } `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(renderedRules(t), &rules); err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, m := range metricNames(r.Expr) {
				if !exported[m] {
					t.Errorf("alert %s: meshid exports no metric %s", r.Alert, m)
				}
			}
		}
	}
}

var metricName = regexp.MustCompile(`meshid_[a-z_]+`)

// metricNames are the meshid metrics a query reads, a histogram's series
// by the histogram's name.
func metricNames(expr string) []string {
	var names []string
	for _, m := range metricName.FindAllString(expr, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, "_duration_seconds"+suffix) {
				m = strings.TrimSuffix(m, suffix)
			}
		}
		names = append(names, m)
	}
	return names
}

// exportedMetrics are the names quoted in meshid-ca's and meshid-proxy's
// metrics.go and their JWT files (read as text: ca/manifest may not import
// ca or proxy).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range []string{"../metrics.go", "../jwtservice.go", "../../proxy/metrics.go", "../../proxy/jwt.go"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(meshid_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in metrics.go: %v", len(names), names)
	}
	return names
}
