package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/policy"
)

const requests = `
ports:
- port: 8080
  mode: cluster-authenticated
  requests:
  - policy: shop/api
    name: web-reads
    from: [{serviceAccount: shop/web}]
    hosts: [api.shop, "*.api.shop"]
    matches:
    - {method: GET, path: {type: PathPrefix, value: /api}}
    - {method: HEAD, path: {type: Exact, value: /healthz}}
  - policy: shop/api
    name: billing-refunds
    from: [{namespace: billing}]
    matches:
    - grpc: {service: payments.v1.Charge, method: Refund}
    - grpc: {service: payments.v1.*, method: Get}
  - policy: shop/api
    name: anyone-healthz
    matches:
    - path: {type: Exact, value: /healthz}
  - policy: shop/api
    name: ops-audit
    mode: audit
    from: [{pattern: "spiffe://cluster.local/ns/ops/sa/*"}]
    matches:
    - method: GET
- port: 8081
  requests:
  - name: trial
    mode: audit
    from: [{serviceAccount: shop/web}]
    matches:
    - method: GET
- port: 8082
`

var (
	web     = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	billing = spiffeid.RequireFromString("spiffe://cluster.local/ns/billing/sa/refunder")
	ops     = spiffeid.RequireFromString("spiffe://cluster.local/ns/ops/sa/oncall")
	other   = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
)

func TestDecide(t *testing.T) {
	p, err := policy.Parse([]byte(requests), td)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		allowed, audited bool
		rule, reason     string
	}
	tests := []struct {
		name string
		port int
		req  policy.Request
		want want
	}{
		{"web GET under the prefix", 8080, policy.Request{Peer: web, Method: "GET", Path: "/api/orders", Host: "api.shop"}, want{true, false, "web-reads", policy.ReasonAllowed}},
		{"web GET the prefix itself", 8080, policy.Request{Peer: web, Method: "GET", Path: "/api", Host: "api.shop"}, want{true, false, "web-reads", policy.ReasonAllowed}},
		{"web GET a sibling of the prefix", 8080, policy.Request{Peer: web, Method: "GET", Path: "/apix", Host: "api.shop"}, want{false, false, "web-reads", policy.ReasonPath}},
		{"web DELETE", 8080, policy.Request{Peer: web, Method: "DELETE", Path: "/api/orders/1", Host: "api.shop"}, want{false, false, "web-reads", policy.ReasonMethod}},
		{"web lower-case get", 8080, policy.Request{Peer: web, Method: "get", Path: "/api/orders", Host: "api.shop"}, want{false, false, "web-reads", policy.ReasonMethod}},
		{"web on a wildcard host", 8080, policy.Request{Peer: web, Method: "GET", Path: "/api/x", Host: "eu.api.shop"}, want{true, false, "web-reads", policy.ReasonAllowed}},
		{"web on the wildcard's own name is the exact one", 8080, policy.Request{Peer: web, Method: "GET", Path: "/api/x", Host: "api.shop"}, want{true, false, "web-reads", policy.ReasonAllowed}},
		{"web on another host", 8080, policy.Request{Peer: web, Method: "GET", Path: "/api/x", Host: "evil.shop"}, want{false, false, "web-reads", policy.ReasonHost}},
		{"web HEAD healthz exact", 8080, policy.Request{Peer: web, Method: "HEAD", Path: "/healthz", Host: "api.shop"}, want{true, false, "web-reads", policy.ReasonAllowed}},
		{"web healthz with a trailing slash is not exact but anyone-healthz neither", 8080, policy.Request{Peer: web, Method: "HEAD", Path: "/healthz/", Host: "api.shop"}, want{false, false, "web-reads", policy.ReasonMethod}},
		{"anyone may read healthz", 8080, policy.Request{Peer: other, Method: "GET", Path: "/healthz"}, want{true, false, "anyone-healthz", policy.ReasonAllowed}},
		{"a rule for every peer names the peer", 8080, policy.Request{Peer: other, Method: "GET", Path: "/api"}, want{false, false, "anyone-healthz", policy.ReasonPath}},
		{"plain peer healthz", 8080, policy.Request{Method: "GET", Path: "/healthz"}, want{true, false, "anyone-healthz", policy.ReasonAllowed}},
		{"billing Refund", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1.Charge/Refund", GRPC: true}, want{true, false, "billing-refunds", policy.ReasonAllowed}},
		{"billing Capture", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1.Charge/Capture", GRPC: true}, want{false, false, "billing-refunds", policy.ReasonGRPCMethod}},
		{"billing Get on any service of the package", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1.Invoice/Get", GRPC: true}, want{true, false, "billing-refunds", policy.ReasonAllowed}},
		{"billing Get one segment too deep", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1.x.Invoice/Get", GRPC: true}, want{false, false, "billing-refunds", policy.ReasonGRPCMethod}},
		{"billing Get one segment short", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1/Get", GRPC: true}, want{false, false, "billing-refunds", policy.ReasonGRPCMethod}},
		{"billing Refund, not as gRPC", 8080, policy.Request{Peer: billing, Method: "POST", Path: "/payments.v1.Charge/Refund"}, want{false, false, "billing-refunds", policy.ReasonNotGRPC}},
		{"ops GET in audit", 8080, policy.Request{Peer: ops, Method: "GET", Path: "/anything"}, want{true, false, "ops-audit", policy.ReasonAllowed}},
		{"ops DELETE is only audited by ops-audit but anyone-healthz enforces", 8080, policy.Request{Peer: ops, Method: "DELETE", Path: "/x"}, want{false, false, "anyone-healthz", policy.ReasonPath}},
		{"audit rule: web DELETE on 8081", 8081, policy.Request{Peer: web, Method: "DELETE", Path: "/x"}, want{true, true, "trial", policy.ReasonMethod}},
		{"audit rule: a peer no rule names, every rule in audit", 8081, policy.Request{Peer: other, Method: "GET", Path: "/x"}, want{true, true, "", policy.ReasonPeerNotNamed}},
		{"audit rule: web GET on 8081", 8081, policy.Request{Peer: web, Method: "GET", Path: "/x"}, want{true, false, "trial", policy.ReasonAllowed}},
		{"no request rules", 8082, policy.Request{Peer: other, Method: "DELETE", Path: "/x"}, want{true, false, "", policy.ReasonAllowed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.For(tt.port).Decide(&tt.req)
			got := want{d.Allowed, d.Audited, d.Rule, d.Reason}
			if got != tt.want {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
			if tt.port == 8080 && d.Policy != "shop/api" {
				t.Fatalf("Decide names policy %q, want shop/api", d.Policy)
			}
		})
	}
	if p.For(8082).HasRequestRules() || !p.For(8080).HasRequestRules() || p.For(9999).HasRequestRules() {
		t.Fatal("HasRequestRules is wrong")
	}
}

func TestParseRefusesRequestRules(t *testing.T) {
	rule := func(s string) string { return "ports:\n- port: 1\n  requests:\n  - " + s }
	tests := []struct{ name, yaml, says string }{
		{"no name", rule("matches: [{method: GET}]"), "name"},
		{"name not a label", rule("name: Web_Reads"), "name"},
		{"unknown mode", rule("name: a\n    mode: dry-run"), "unknown mode"},
		{"lower-case method", rule("name: a\n    matches: [{method: get}]"), "upper-case"},
		{"path not normal", rule("name: a\n    matches: [{path: {value: /api/../admin}}]"), `write it as "/admin"`},
		{"path with an encoded slash", rule("name: a\n    matches: [{path: {value: /a%2fb}}]"), "encoded slash"},
		{"relative path", rule("name: a\n    matches: [{path: {value: api}}]"), "start with /"},
		{"unknown path type", rule("name: a\n    matches: [{path: {type: RegularExpression, value: /a}}]"), "path type"},
		{"grpc with a method", rule("name: a\n    matches: [{method: GET, grpc: {service: a.B}}]"), "grpc excludes"},
		{"grpc service with a slash", rule("name: a\n    matches: [{grpc: {service: a/B}}]"), "identifier or *"},
		{"grpc partial wildcard", rule("name: a\n    matches: [{grpc: {service: a.B*}}]"), "identifier or *"},
		{"grpc bad method", rule("name: a\n    matches: [{grpc: {method: Get/x}}]"), "not an identifier"},
		{"host with a port", rule("name: a\n    hosts: [api.shop:80]"), "without port"},
		{"host upper case", rule("name: a\n    hosts: [Api.Shop]"), "lower-case"},
		{"host trailing dot", rule("name: a\n    hosts: [api.shop.]"), "trailing dot"},
		{"from of any trust domain", rule("name: a\n    from: [{pattern: 'spiffe://*/ns/a/sa/b'}]"), "must name its trust domain literally"},
		{"from with two fields", rule("name: a\n    from: [{namespace: a, serviceAccount: a/b}]"), "exactly one"},
		{"same name twice", "ports:\n- port: 1\n  requests:\n  - name: a\n  - name: a", "used twice"},
		{"unknown field", rule("name: a\n    method: GET"), "unknown field"},
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

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/api/orders", "/api/orders"},
		{"/api/../admin", "/admin"},
		{"/api/%2e%2e/admin", "/admin"},
		{"/api/%2E%2E/admin", "/admin"},
		{"/api/.%2e/admin", "/admin"},
		{"/api/./orders", "/api/orders"},
		{"//api//orders", "/api/orders"},
		{"/api/orders/", "/api/orders/"},
		{"/api/orders/.", "/api/orders/"},
		{"/api/..", "/"},
		{"/../../etc/passwd", "/etc/passwd"},
		{"/%61pi", "/api"},
		{"/a%20b", "/a%20b"},
		{"/a%3fb", "/a%3Fb"},
		{"/Admin", "/Admin"},
		{"/api/...", "/api/..."},
		{"/.well-known/x", "/.well-known/x"},
		{"/a..b/c", "/a..b/c"},
	}
	for _, tt := range tests {
		got, err := policy.NormalizePath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "api", "*", "/a%2fb", "/a%2Fb", "/a%5cb", "/a%00", "/a\\b", "/a%", "/a%4", "/a%zz", "/a\x00b", "/a\nb"} {
		if got, err := policy.NormalizePath(bad); !errors.Is(err, policy.ErrPath) {
			t.Errorf("NormalizePath(%q) = %q, %v; want ErrPath", bad, got, err)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"api.shop", "api.shop"},
		{"API.Shop", "api.shop"},
		{"api.shop.", "api.shop"},
		{"api.shop.:8080", "api.shop"},
		{"api.shop:8080", "api.shop"},
		{"[::1]:8080", "::1"},
		{"::1", "::1"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := policy.NormalizeHost(tt.in); got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// twentyRules is the port of the benchmark row: 20 request rules, the
// request allowed by the last.
func twentyRules(tb testing.TB) *policy.Port {
	var b strings.Builder
	b.WriteString("ports:\n- port: 1\n  requests:\n")
	for i := range 19 {
		b.WriteString("  - name: r" + string(rune('a'+i)) + "\n    from: [{serviceAccount: shop/web}]\n    hosts: [api.shop]\n    matches:\n    - {method: GET, path: {value: /v" + string(rune('a'+i)) + "}}\n    - grpc: {service: pay.v1.*, method: Get}\n")
	}
	b.WriteString("  - name: last\n    from: [{namespace: shop}]\n    matches:\n    - {method: POST, path: {type: Exact, value: /api/orders}}\n")
	p, err := policy.Parse([]byte(b.String()), td)
	if err != nil {
		tb.Fatal(err)
	}
	return p.For(1)
}

// BenchmarkDecide: the matcher does not allocate (0 allocs/op), with the
// path and host normalised on the way, as the proxy does per request.
func BenchmarkDecide(b *testing.B) {
	port := twentyRules(b)
	b.ReportAllocs()
	for b.Loop() {
		path, _ := policy.NormalizePath("/api/orders")
		r := policy.Request{Peer: web, Method: "POST", Path: path, Host: policy.NormalizeHost("api.shop:8080")}
		if d := port.Decide(&r); !d.Allowed || d.Rule != "last" {
			b.Fatalf("%+v", d)
		}
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	port := twentyRules(t)
	r := policy.Request{Peer: web, Method: "POST", Path: "/api/orders", Host: "api.shop"}
	denied := policy.Request{Peer: other, Method: "DELETE", Path: "/x", Host: "api.shop", GRPC: true}
	if n := testing.AllocsPerRun(100, func() { port.Decide(&r); port.Decide(&denied) }); n != 0 {
		t.Fatalf("Decide allocates %v times per request; want 0", n)
	}
}

// FuzzNormalizePath: a normalised path is normal (normalising it again
// changes nothing), starts with /, and has no dot segment, empty segment,
// encoded slash or backslash left.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/api/../admin", "/%2e%2e/", "//a//b", "/a%2fb", "/a/./b/", "/%41%7e", "/a%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := policy.NormalizePath(in)
		if err != nil {
			if !errors.Is(err, policy.ErrPath) {
				t.Fatalf("error %v does not wrap ErrPath", err)
			}
			return
		}
		again, err := policy.NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("NormalizePath(%q) = %q, but again = %q, %v", in, out, again, err)
		}
		if out[0] != '/' || strings.Contains(out, "//") || strings.Contains(out, "/./") || strings.Contains(out, "/../") ||
			strings.HasSuffix(out, "/.") || strings.HasSuffix(out, "/..") || strings.ContainsAny(out, "\\") ||
			strings.Contains(strings.ToUpper(out), "%2F") || strings.Contains(strings.ToUpper(out), "%2E") {
			t.Fatalf("NormalizePath(%q) = %q is not normal", in, out)
		}
	})
}

// FuzzDecide: any request against the rules of the example gets a
// verdict without panicking, the verdict is the same twice, and a denial
// names a reason and, when a rule names the peer, that rule.
func FuzzDecide(f *testing.F) {
	p, err := policy.Parse([]byte(requests), td)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("spiffe://cluster.local/ns/shop/sa/web", "GET", "/api/x", "api.shop", false)
	f.Add("spiffe://cluster.local/ns/billing/sa/x", "POST", "/payments.v1.Charge/Refund", "", true)
	f.Add("", "GET", "/healthz", "x", false)
	f.Fuzz(func(t *testing.T, peer, method, path, host string, grpc bool) {
		id, _ := spiffeid.FromString(peer)
		r := policy.Request{Peer: id, Method: method, Path: path, Host: policy.NormalizeHost(host), GRPC: grpc}
		for _, n := range []int{8080, 8081, 8082} {
			d := p.For(n).Decide(&r)
			if d != p.For(n).Decide(&r) {
				t.Fatal("two verdicts for one request")
			}
			if !d.Allowed && (d.Reason == "" || d.Reason == policy.ReasonAllowed) {
				t.Fatalf("denial without a reason: %+v", d)
			}
			if d.Allowed && !d.Audited && d.Reason != policy.ReasonAllowed {
				t.Fatalf("allowed with reason %q", d.Reason)
			}
		}
	})
}

// TestCheckForeignPeer: Check re-checks the connection rules as the proxy
// does: a federated peer a rule names passes them and meets the request
// rules; one no rule names is peer_denied, even in all-authenticated (a
// request does not say which bundle verified its connection: the stricter
// reading).
func TestCheckForeignPeer(t *testing.T) {
	p, err := policy.Parse([]byte(`
ports:
- port: 1
  allow: [{id: spiffe://b.example/ns/shop/sa/web}]
  requests:
  - name: reads
    matches: [{method: GET}]
- port: 2
  mode: all-authenticated
  requests:
  - name: reads
    matches: [{method: GET}]
`), td)
	if err != nil {
		t.Fatal(err)
	}
	named := spiffeid.RequireFromString("spiffe://b.example/ns/shop/sa/web")
	unnamed := spiffeid.RequireFromString("spiffe://b.example/ns/shop/sa/evil")
	for _, tt := range []struct {
		port   int
		peer   spiffeid.ID
		method string
		reason string
	}{
		{1, named, "GET", policy.ReasonAllowed},
		{1, named, "DELETE", policy.ReasonMethod},
		{1, unnamed, "GET", policy.ReasonPeerDenied},
		{2, unnamed, "GET", policy.ReasonPeerDenied},
		{2, web, "GET", policy.ReasonAllowed},
	} {
		d, _, _ := p.For(tt.port).Check(policy.Call{Peer: tt.peer, Method: tt.method, EscapedPath: "/x"})
		if d.Reason != tt.reason || d.Allowed != (tt.reason == policy.ReasonAllowed) {
			t.Errorf("port %d, %s %s: %+v, want %s", tt.port, tt.peer, tt.method, d, tt.reason)
		}
	}
}
