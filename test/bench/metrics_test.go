package bench

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := strings.Join([]string{
		"# HELP go_goroutines Number of goroutines that currently exist.",
		"# TYPE go_goroutines gauge",
		"go_goroutines 1234",
		"",
		`apiserver_request_total{code="200",resource="configmaps",verb="PUT"} 10`,
		`apiserver_request_total{code="422",resource="configmaps",verb="PUT"} 3 1700000000000`,
		`apiserver_request_total{code="200",resource="secrets",verb="PUT"} 99`,
		`weird{path="a\"b\\c, d}",x="1"} 2.5e3`,
	}, "\n")
	ss, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 5 {
		t.Fatalf("got %d samples, want 5: %+v", len(ss), ss)
	}
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"go_goroutines", nil, 1234},
		{"apiserver_request_total", map[string]string{"resource": "configmaps"}, 13},
		{"apiserver_request_total", map[string]string{"resource": "configmaps", "code": "422"}, 3},
		{"apiserver_request_total", nil, 112},
		{"weird", map[string]string{"path": `a"b\c, d}`, "x": "1"}, 2500},
		{"absent", nil, 0},
	} {
		if got := ss.Sum(c.name, c.match); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.match, got, c.want)
		}
	}
}

func TestParseMetricsRefuses(t *testing.T) {
	for name, line := range map[string]string{
		"no value":          "go_goroutines",
		"not a number":      "go_goroutines many",
		"unclosed label":    `x{a="b} 1`,
		"label without =":   `x{a} 1`,
		"too many fields":   "x 1 2 3",
		"label, no value":   `x{a="b"}`,
		"starts with brace": `{a="b"} 1`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseMetrics(line); err == nil {
				t.Errorf("ParseMetrics(%q) accepted it", line)
			}
		})
	}
}
