package ca_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/issuer"
)

// TestReadyUnreachable: a trust bundle from a ConfigMap on an API server
// that refuses connections leaves /ready saying that, not only that no
// bundle is loaded.
func TestReadyUnreachable(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	anchor, err := issuer.NewAnchor(issuer.CAParams{CommonName: "anchor", NotBefore: now.Add(-time.Hour), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "issuer", NotBefore: now.Add(-time.Hour), TTL: 12 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := runService(t, anchor, iss, func(c *ca.Config) {
		c.Client, c.BundleConfigMap, c.BundleFile = client, "meshid-trust-bundle", ""
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		body := rec.Body.String()
		if rec.Code == http.StatusServiceUnavailable && strings.Contains(body, "no trust bundle loaded yet") &&
			strings.Contains(body, "ConfigMap meshid/meshid-trust-bundle: the API server does not answer") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready %d %q; want 503 saying the API server does not answer", rec.Code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
