package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

const example = `
default: deny
ports:
- port: 8443
  mode: deny
  allow:
  - id: spiffe://cluster.local/ns/shop/sa/web
  - serviceAccount: shop/checkout
  - namespace: monitoring
  - pattern: spiffe://cluster.local/ns/*/sa/prometheus
- port: 9000
  mode: cluster-authenticated
- port: 9001
  mode: all-authenticated
- port: 9002
  mode: all-unauthenticated
`

func TestAuthorize(t *testing.T) {
	p, err := policy.Parse([]byte(example), td)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		port  int
		peer  string
		allow bool
	}{
		{8443, "spiffe://cluster.local/ns/shop/sa/web", true},
		{8443, "spiffe://cluster.local/ns/shop/sa/checkout", true},
		{8443, "spiffe://cluster.local/ns/monitoring/sa/grafana", true},
		{8443, "spiffe://cluster.local/ns/team-a/sa/prometheus", true},
		{8443, "spiffe://cluster.local/ns/shop/sa/evil", false},
		{8443, "spiffe://cluster.local/ns/monitoring/sa/grafana/extra", false},
		{8443, "spiffe://other.example/ns/shop/sa/web", false},
		{8443, "spiffe://cluster.local/ns/shop/sa/web/extra", false},
		{8443, "spiffe://other.example/ns/monitoring/sa/grafana", false},
		{8443, "spiffe://cluster.local/ns/a/sa/prometheus/x", false},
		{9000, "spiffe://cluster.local/ns/any/sa/one", true},
		{9000, "spiffe://other.example/ns/any/sa/one", false},
		{9001, "spiffe://other.example/ns/any/sa/one", true},
		{9002, "spiffe://cluster.local/ns/any/sa/one", true},
		{1234, "spiffe://cluster.local/ns/shop/sa/web", false}, // default deny
	}
	for _, tt := range tests {
		err := p.For(tt.port).Authorize(spiffeid.RequireFromString(tt.peer))
		if (err == nil) != tt.allow {
			t.Errorf("port %d, %s: %v, want allowed=%v", tt.port, tt.peer, err, tt.allow)
		}
		var d *policy.DeniedError
		if err != nil && (!errors.As(err, &d) || d.Peer.String() != tt.peer || d.Port != tt.port) {
			t.Errorf("denial %v does not name the peer and port", err)
		}
	}
}

// TestAuthorizeForeign: a peer verified against a federated trust
// domain's bundle is admitted only by a rule naming it (id, pattern,
// trustDomain), never by a mode, nor by "*"; our own peers are decided as
// by Authorize.
func TestAuthorizeForeign(t *testing.T) {
	p, err := policy.Parse([]byte(`
ports:
- port: 8443
  allow:
  - id: spiffe://a.example/ns/shop/sa/web
  - pattern: spiffe://spire.test/workload/*
  - trustDomain: c.example
  - serviceAccount: shop/checkout
- port: 8444
  allow:
  - pattern: "*"
- port: 9000
  mode: cluster-authenticated
- port: 9001
  mode: all-authenticated
- port: 9002
  mode: all-unauthenticated
`), td)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		port  int
		peer  string
		allow bool
	}{
		{8443, "spiffe://a.example/ns/shop/sa/web", true},
		{8443, "spiffe://a.example/ns/shop/sa/other", false}, // not named
		{8443, "spiffe://spire.test/workload/api", true},
		{8443, "spiffe://spire.test/workload/api/x", false},
		{8443, "spiffe://c.example/anything/at/all", true},
		{8443, "spiffe://a.example/ns/shop/sa/checkout", false}, // serviceAccount is ours
		{8443, "spiffe://cluster.local/ns/shop/sa/checkout", true},
		{8444, "spiffe://a.example/ns/shop/sa/web", false}, // "*" is our trust domain
		{8444, "spiffe://cluster.local/ns/shop/sa/web", true},
		{9000, "spiffe://a.example/ns/shop/sa/web", false}, // cluster-authenticated stays local
		{9001, "spiffe://a.example/ns/shop/sa/web", false},
		{9002, "spiffe://a.example/ns/shop/sa/web", false},
		{9001, "spiffe://cluster.local/ns/any/sa/one", true},
	} {
		err := p.For(tt.port).AuthorizeForeign(spiffeid.RequireFromString(tt.peer))
		if (err == nil) != tt.allow {
			t.Errorf("port %d, %s: %v, want allowed=%v", tt.port, tt.peer, err, tt.allow)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, yaml, says string
	}{
		{"unknown mode", "default: allow-all", "unknown mode"},
		{"unknown field", "ports:\n- port: 1\n  allowed: []", "unknown field"},
		{"bad id", "ports:\n- port: 1\n  allow:\n  - id: http://x/y", "scheme"},
		{"rule with two fields", "ports:\n- port: 1\n  allow:\n  - id: spiffe://cluster.local/a\n    namespace: b", "exactly one"},
		{"empty rule", "ports:\n- port: 1\n  allow:\n  - {}", "exactly one"},
		{"bad namespace", "ports:\n- port: 1\n  allow:\n  - namespace: Shop_1", "namespace"},
		{"bad service account", "ports:\n- port: 1\n  allow:\n  - serviceAccount: shop", "NAMESPACE/NAME"},
		{"bad pattern", "ports:\n- port: 1\n  allow:\n  - pattern: 'spiffe://cluster.local/[x'", "syntax"},
		{"pattern without scheme", "ports:\n- port: 1\n  allow:\n  - pattern: 'ns/*'", "spiffe://"},
		{"duplicate port", "ports:\n- port: 1\n- port: 1", "listed twice"},
		{"port out of range", "ports:\n- port: 70000", "between 1 and 65535"},
		{"rules that do nothing", "ports:\n- port: 1\n  mode: all-authenticated\n  allow:\n  - namespace: a", "would do nothing"},
		{"not yaml", "ports: [", "yaml"},
		{"pattern of any trust domain", "ports:\n- port: 1\n  allow:\n  - pattern: 'spiffe://*/ns/a/sa/b'", "must name its trust domain literally"},
		{"pattern of a trust domain only", "ports:\n- port: 1\n  allow:\n  - pattern: 'spiffe://b.example'", "must name its trust domain literally"},
		{"invalid trust domain", "ports:\n- port: 1\n  allow:\n  - trustDomain: 'B Example'", "trustDomain"},
		{"trust domain and id", "ports:\n- port: 1\n  allow:\n  - trustDomain: b.example\n    id: spiffe://b.example/x", "exactly one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tt.yaml), td)
			if !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Parse = %v; want ErrInvalid saying %q", err, tt.says)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("default: all-unauthenticated"))
	f.Add([]byte("ports:\n- port: 1\n  allow:\n  - pattern: '*'"))
	f.Add([]byte(requests))
	peers := []spiffeid.ID{
		spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"),
		spiffeid.RequireFromString("spiffe://evil.example/ns/shop/sa/web"),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data, td)
		if err != nil {
			if !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Any accepted policy answers for any port without panicking.
		for _, n := range append(p.Ports(), 1, 65535) {
			port := p.For(n)
			for _, peer := range peers {
				_ = port.Authorize(peer)
			}
		}
	})
}
