package manifest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/ca/manifest"
)

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// promtoolTests is the part of a promtool test file the test reads.
type promtoolTests struct {
	Tests []struct {
		Name  string `json:"name"`
		Cases []struct {
			Alert  string `json:"alertname"`
			At     string `json:"eval_time"`
			Alerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertRules: the rule file install renders passes `promtool check
// rules` and the synthetic series of testdata/alerts_test.yaml under
// `promtool test rules`, and every alert in it has a test that sees it fire
// and, earlier in the same series, one that sees it quiet (not before).
// The PrometheusRule of --prometheus-operator holds the same groups.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool not found: install Debian package prometheus (.ci/run does) to test the alert rules")
		}
		t.Fatal("promtool not found: install Debian package prometheus (.ci/run does)")
	}
	rules := renderedRules(t)
	var parsed ruleFile
	if err := yaml.Unmarshal(rules, &parsed); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests, err := os.ReadFile("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{manifest.AlertsFile: rules, "alerts_test.yaml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"check", "rules", manifest.AlertsFile}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var pt promtoolTests
	if err := yaml.Unmarshal(tests, &pt); err != nil {
		t.Fatal(err)
	}
	fires, quietBefore := map[string]bool{}, map[string]bool{}
	for _, test := range pt.Tests {
		quiet := map[string]time.Duration{} // earliest quiet eval of each alert
		for _, c := range test.Cases {
			at := promDuration(t, c.At)
			if len(c.Alerts) == 0 {
				if q, ok := quiet[c.Alert]; !ok || at < q {
					quiet[c.Alert] = at
				}
			}
		}
		for _, c := range test.Cases {
			if len(c.Alerts) > 0 {
				fires[c.Alert] = true
				if q, ok := quiet[c.Alert]; ok && q < promDuration(t, c.At) {
					quietBefore[c.Alert] = true
				}
			}
		}
	}
	n := 0
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] || !quietBefore[r.Alert] {
				t.Errorf("alert %s: testdata/alerts_test.yaml needs a case where it fires and, earlier in the same series, one where it does not (fires %v, quiet before %v)", r.Alert, fires[r.Alert], quietBefore[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatalf("the rendered rule file has no alerts:\n%s", rules)
	}
}

// renderedRules renders a control plane and returns its rule file, after
// checking that the PrometheusRule variant holds the same groups.
func renderedRules(t *testing.T) []byte {
	t.Helper()
	o := manifest.Options{Image: "meshid-ca:test", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("cert"), IssuerKeyPEM: []byte("key")}
	objs, err := manifest.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	var file []byte
	for _, obj := range objs {
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == manifest.AlertsConfigMap {
			file = []byte(cm.Data[manifest.AlertsFile])
		}
	}
	if file == nil {
		t.Fatalf("no ConfigMap %s with %s rendered", manifest.AlertsConfigMap, manifest.AlertsFile)
	}
	o.PrometheusOperator = true
	objs, err = manifest.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	var fromFile, fromRule any
	if err := yaml.Unmarshal(file, &fromFile); err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if u, ok := obj.(*unstructured.Unstructured); ok && u.GetKind() == "PrometheusRule" {
			data, _ := yaml.Marshal(u.Object["spec"])
			_ = yaml.Unmarshal(data, &fromRule)
		}
	}
	if !reflect.DeepEqual(fromFile, fromRule) {
		t.Fatalf("the PrometheusRule's spec differs from the rule file:\n%v\n%v", fromRule, fromFile)
	}
	return file
}

// promDuration parses promtool's eval_time: Go's durations with days.
func promDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	var d time.Duration
	if days, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			t.Fatalf("eval_time %q: %v", s, err)
		}
		d, s = time.Duration(n)*24*time.Hour, rest
	}
	if s == "" {
		return d
	}
	rest, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("eval_time %q: %v", s, err)
	}
	return d + rest
}

// TestWorkloadExpiryFollowsLeafTTL: the workload certificate alert pages
// when less than a quarter of a leaf's life is left, an hour at most, so an
// install with hour-long leaves is not paged for every new certificate.
func TestWorkloadExpiryFollowsLeafTTL(t *testing.T) {
	for _, tt := range []struct {
		ttl           time.Duration
		expr, summary string
	}{
		{24 * time.Hour, "< 3600", "less than an hour"},
		{4 * time.Hour, "< 3600", "less than an hour"},
		{time.Hour, "< 900", "less than 15m"},
		{10 * time.Minute, "< 150", "less than 2m30s"},
	} {
		o := manifest.Options{Image: "meshid-ca:test", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("cert"), IssuerKeyPEM: []byte("key"), LeafTTL: tt.ttl}
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var file ruleFile
		for _, obj := range objs {
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == manifest.AlertsConfigMap {
				if err := yaml.Unmarshal([]byte(cm.Data[manifest.AlertsFile]), &file); err != nil {
					t.Fatal(err)
				}
			}
		}
		found := false
		for _, g := range file.Groups {
			for _, r := range g.Rules {
				if r.Alert != "MeshidWorkloadCertificateExpiring" {
					continue
				}
				found = true
				if !strings.HasSuffix(r.Expr, tt.expr) || !strings.Contains(r.Annotations["summary"], tt.summary) {
					t.Errorf("--leaf-ttl %v: expr %q, summary %q; want %q and %q", tt.ttl, r.Expr, r.Annotations["summary"], tt.expr, tt.summary)
				}
			}
		}
		if !found {
			t.Fatalf("--leaf-ttl %v: no MeshidWorkloadCertificateExpiring rule rendered", tt.ttl)
		}
	}
}
