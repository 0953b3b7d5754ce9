package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// protoApp is an HTTP app speaking HTTP/1.1 and h2c, answering with what
// it saw.
func protoApp(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "app: %s %s %s", r.Proto, r.Method, r.URL.EscapedPath())
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// TestRequestPolicy: request rules enforced by real meshid-proxy processes
// between real clients and apps. db's proxy has request rules on an HTTP
// port and a gRPC port; web reaches them through its outbound proxy (the
// app's bytes inside meshid mTLS), curl directly with web's certificate.
// net/http HTTP/1.1 and h2c clients, curl (HTTP/1.1 and HTTP/2) and a
// grpc-go client get allowed requests through, denied ones refused (403,
// PERMISSION_DENIED) on a connection that stays usable; audit mode lets
// them through and counts them; a policy change reaches a kept-alive
// connection at its next request.
func TestRequestPolicy(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	ns := namespace(t, "reqs")
	for _, sa := range []string{"web", "db", "billing"} {
		serviceAccount(t, ns, sa)
	}
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(grpcLis) }()
	t.Cleanup(gs.Stop)

	httpIn, grpcIn := freeAddr(t), freeAddr(t)
	_, httpPort, _ := net.SplitHostPort(httpIn)
	_, grpcPort, _ := net.SplitHostPort(grpcIn)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	policy := func(mode string) string {
		return fmt.Sprintf(`ports:
- port: %s
  allow: [{namespace: %[3]s}]
  requests:
  - policy: %[3]s/db
    name: web-reads
    mode: %[4]s
    from: [{serviceAccount: %[3]s/web}]
    matches:
    - {method: GET, path: {value: /api}}
- port: %[2]s
  allow: [{namespace: %[3]s}]
  requests:
  - policy: %[3]s/db
    name: health
    from: [{serviceAccount: %[3]s/web}]
    matches:
    - grpc: {service: grpc.health.v1.Health, method: Check}
    - grpc: {service: grpc.health.v1.Health, method: Watch}
`, httpPort, grpcPort, ns, mode)
	}
	writeFile(t, policyFile, policy("enforce"))
	db := startProxy(t, ca, ns, "db", "--inbound", httpIn+"="+protoApp(t), "--inbound", grpcIn+"="+grpcLis.Addr().String(), "--policy", policyFile)
	webHTTP, webGRPC, billingHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	web := startProxy(t, ca, ns, "web", "--outbound", webHTTP+"="+httpIn, "--outbound", webGRPC+"="+grpcIn)
	startProxy(t, ca, ns, "billing", "--outbound", billingHTTP+"="+httpIn)

	do := func(t *testing.T, client *http.Client, method, url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	inbound := func() float64 { return db.metric(t, `meshid_proxy_connections_total{direction="inbound"}`) }
	deniedSeries := fmt.Sprintf(`meshid_proxy_requests_denied_total{policy="%s/db",reason="method_not_allowed",rule="web-reads"}`, ns)

	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	t.Run("HTTP/1.1 through web's outbound", func(t *testing.T) {
		if status, body := do(t, h1, "GET", "http://"+webHTTP+"/api/orders"); status != 200 || body != "app: HTTP/1.1 GET /api/orders" {
			t.Fatalf("GET = %d %q", status, body)
		}
		before := inbound()
		if status, body := do(t, h1, "DELETE", "http://"+webHTTP+"/api/orders/1"); status != 403 || !strings.Contains(body, "rule web-reads (method_not_allowed)") {
			t.Fatalf("DELETE = %d %q", status, body)
		}
		if status, body := do(t, h1, "GET", "http://"+webHTTP+"/api/../admin"); status != 403 || !strings.Contains(body, "path_not_allowed") {
			t.Fatalf("GET /api/../admin = %d %q", status, body)
		}
		if status, _ := do(t, h1, "GET", "http://"+webHTTP+"/api/x"); status != 200 {
			t.Fatalf("GET after denials = %d", status)
		}
		if got := inbound(); got != before {
			t.Fatalf("the requests took %v new connections; want the kept-alive one", got-before)
		}
		if v := db.metric(t, deniedSeries); v != 1 {
			t.Fatalf("%s = %v, want 1", deniedSeries, v)
		}
	})

	t.Run("h2c through web's outbound", func(t *testing.T) {
		var h2cOnly http.Protocols
		h2cOnly.SetUnencryptedHTTP2(true) // HTTP/2 with prior knowledge, as a gRPC or h2c client speaks
		h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &h2cOnly}}
		if status, body := do(t, h2c, "GET", "http://"+webHTTP+"/api/orders"); status != 200 || body != "app: HTTP/2.0 GET /api/orders" {
			t.Fatalf("GET = %d %q", status, body)
		}
		if status, _ := do(t, h2c, "DELETE", "http://"+webHTTP+"/api/orders"); status != 403 {
			t.Fatalf("DELETE = %d", status)
		}
		if status, _ := do(t, h2c, "GET", "http://"+webHTTP+"/api/orders"); status != 200 {
			t.Fatalf("GET after a denial = %d", status)
		}
	})

	t.Run("a peer no rule names", func(t *testing.T) {
		if status, body := do(t, fresh, "GET", "http://"+billingHTTP+"/api/orders"); status != 403 || !strings.Contains(body, "peer_not_named") {
			t.Fatalf("billing GET = %d %q", status, body)
		}
	})

	t.Run("grpc-go through web's outbound", func(t *testing.T) {
		conn, err := grpc.NewClient(webGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthgrpc.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
			t.Fatalf("Check: %v", err)
		}
		if _, err := hc.List(ctx, &healthgrpc.HealthListRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("List = %v, want PERMISSION_DENIED", err)
		}
		hs.SetServingStatus("db", healthgrpc.HealthCheckResponse_SERVING)
		stream, err := hc.Watch(ctx, &healthgrpc.HealthCheckRequest{Service: "db"})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []healthgrpc.HealthCheckResponse_ServingStatus{healthgrpc.HealthCheckResponse_SERVING, healthgrpc.HealthCheckResponse_NOT_SERVING} {
			msg, err := stream.Recv()
			if err != nil || msg.Status != want {
				t.Fatalf("Watch: %v, %v; want %v", msg, err, want)
			}
			hs.SetServingStatus("db", healthgrpc.HealthCheckResponse_NOT_SERVING)
		}
		if _, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
			t.Fatalf("Check after a denial and a stream: %v", err)
		}
	})

	t.Run("curl with web's certificate", func(t *testing.T) {
		out := certifyAs(t, ca, ns, "web", web.bundleFile)
		cert, key := filepath.Join(out, "svid.pem"), filepath.Join(out, "svid.key")
		for _, proto := range []string{"--http1.1", "--http2"} {
			curl := func(method, path string) string {
				b, _ := exec.Command("curl", "-sS", "-k", proto, "--cert", cert, "--key", key, "-X", method, "-w", " %{http_code} %{http_version}", "https://"+httpIn+path).CombinedOutput()
				return string(b)
			}
			want := map[string]string{"--http1.1": "app: HTTP/1.1 GET /api/x 200 1.1", "--http2": "app: HTTP/2.0 GET /api/x 200 2"}[proto]
			if got := curl("GET", "/api/x"); got != want {
				t.Errorf("curl %s GET = %q, want %q", proto, got, want)
			}
			if got := curl("DELETE", "/api/x"); !strings.Contains(got, " 403 ") || !strings.Contains(got, "method_not_allowed") {
				t.Errorf("curl %s DELETE = %q, want 403 method_not_allowed", proto, got)
			}
		}
	})

	t.Run("meshid policy explain agrees with the proxy", func(t *testing.T) {
		explain := func(t *testing.T, args ...string) (allowed bool, rule, why string) {
			t.Helper()
			cmd := exec.Command(filepath.Join(need(t).bin, "meshid"), append([]string{"policy", "explain", "--policy", policyFile, "-o", "json"}, args...)...)
			out, err := cmd.Output()
			var r struct {
				Allowed bool   `json:"allowed"`
				Rule    string `json:"rule"`
				Why     string `json:"why"`
			}
			if jerr := json.Unmarshal(out, &r); jerr != nil {
				t.Fatalf("meshid policy explain %v: %v, %v: %s", args, err, jerr, out)
			}
			if (err == nil) != r.Allowed {
				t.Fatalf("meshid policy explain %v: exit %v with allowed=%v", args, err, r.Allowed)
			}
			return r.Allowed, r.Rule, r.Why
		}
		requests := []struct{ method, path string }{
			{"GET", "/api"}, {"GET", "/api/"}, {"GET", "/api/orders"}, {"GET", "/apix"}, {"GET", "/API/orders"},
			{"GET", "/admin"}, {"GET", "/api/../admin"}, {"GET", "/api/%2e%2e/admin"}, {"GET", "//api//x"}, {"GET", "/api/%6frders"},
			{"GET", "/api/a%2fb"}, {"DELETE", "/api/orders"}, {"POST", "/api/orders"}, {"HEAD", "/api/x"}, {"PUT", "/"},
		}
		cases := 0
		for _, caller := range []struct{ sa, out string }{{"web", webHTTP}, {"billing", billingHTTP}} {
			for _, r := range requests {
				status, body := do(t, fresh, r.method, "http://"+caller.out+r.path)
				allowed, rule, why := explain(t, "--port", httpPort, "--from", ns+"/"+caller.sa, "--method", r.method, "--path", r.path)
				if proxy := status == 200; proxy != allowed || !allowed && rule != "" && r.method != "HEAD" && !strings.Contains(body, "rule "+rule) {
					t.Errorf("%s %s %s: the proxy answered %d %q; explain says %s", caller.sa, r.method, r.path, status, body, why)
				}
				cases++
			}
		}
		conn, err := grpc.NewClient(webGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, method := range []string{"Check", "List", "Watch"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var err error
			switch method {
			case "Check":
				_, err = healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{})
			case "List":
				_, err = healthgrpc.NewHealthClient(conn).List(ctx, &healthgrpc.HealthListRequest{})
			case "Watch":
				var s grpc.ServerStreamingClient[healthgrpc.HealthCheckResponse]
				if s, err = healthgrpc.NewHealthClient(conn).Watch(ctx, &healthgrpc.HealthCheckRequest{}); err == nil {
					_, err = s.Recv()
				}
			}
			cancel()
			allowed, _, why := explain(t, "--port", grpcPort, "--from", ns+"/web", "--grpc", "grpc.health.v1.Health/"+method)
			if (err == nil) != allowed {
				t.Errorf("gRPC %s: the proxy answered %v; explain says %s", method, err, why)
			}
			cases++
		}
		if cases < 30 {
			t.Fatalf("%d cases, want at least 30", cases)
		}
	})

	t.Run("audit mode, then the change on a kept-alive connection", func(t *testing.T) {
		before := inbound()
		writeFile(t, policyFile, policy("audit"))
		eventually(t, 10*time.Second, func() error {
			if status, body := do(t, h1, "DELETE", "http://"+webHTTP+"/api/orders/1"); status != 200 || body != "app: HTTP/1.1 DELETE /api/orders/1" {
				return fmt.Errorf("DELETE in audit mode = %d %q", status, body)
			}
			return nil
		})
		if got := inbound(); got != before {
			t.Fatalf("the policy change took %v new connections; want the kept-alive one", got-before)
		}
		audited := fmt.Sprintf(`meshid_proxy_requests_audited_total{policy="%s/db",reason="method_not_allowed",rule="web-reads"}`, ns)
		if v := db.metric(t, audited); v < 1 {
			t.Fatalf("%s = %v", audited, v)
		}
		if v := db.metric(t, deniedSeries); v < 1 {
			t.Fatalf("the earlier denials are gone: %v", v)
		}
		if !strings.Contains(db.logs(t), "request allowed in audit mode") {
			t.Fatal("no log line says the request was audited")
		}
	})
}

// TestRequestPolicyFromCluster: request rules as an AuthorizationPolicy in
// a real API server: the CRD takes them, the webhook refuses a path the
// proxy would never see as written (saying what to write), meshid-ca
// serves the rules to the selected pod's proxy, which enforces them within
// seconds, and `meshid policy explain --to POD` reads the same live
// objects and agrees; switching the policy to audit mode lets the denied
// request through.
func TestRequestPolicyFromCluster(t *testing.T) {
	t.Parallel()
	ca := startCA(t, "--watch-policies")
	ns := namespace(t, "reqcrd")
	startPolicyWebhook(t, ns)
	labelNamespace(t, ns, "meshid-e2e", ns)
	for _, sa := range []string{"web", "db"} {
		serviceAccount(t, ns, sa)
	}
	dbPod := pod(t, ns, "db-0", "db")
	dbPod.Labels = map[string]string{"app": "db"}
	if _, err := need(t).client.CoreV1().Pods(ns).Update(context.Background(), dbPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dbIn, webOut := freeAddr(t), freeAddr(t)
	_, dbPort, _ := net.SplitHostPort(dbIn)
	startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+protoApp(t), "--policy-from-ca", "--pod-name", "db-0", "--default-mode", "deny")
	startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn)

	apply := func(yaml string) (string, error) { return kubectl(t, yaml, "apply", "-n", ns, "-f", "-") }
	policy := func(mode, path string) string {
		return fmt.Sprintf(`apiVersion: meshid.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  port: %[1]s
  allow: [{namespace: %[2]s}]
  requests:
    mode: %[3]s
    rules:
    - name: web-reads
      from: [{serviceAccount: %[2]s/web}]
      matches:
      - method: GET
        path: {type: PathPrefix, value: %[4]s}
`, dbPort, ns, mode, path)
	}
	if out, err := apply(policy("enforce", "/api/../admin")); err == nil || !strings.Contains(out, `write it as \"/admin\"`) && !strings.Contains(out, `write it as "/admin"`) {
		t.Fatalf("a rule path that is not normal was not refused with the webhook's message: %v\n%s", err, out)
	}
	if out, err := apply(policy("enforce", "/api")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	status := func(method string) int {
		req, _ := http.NewRequest(method, "http://"+webOut+"/api/x", nil)
		resp, err := fresh.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, func() error {
		if get, del := status("GET"), status("DELETE"); get != 200 || del != 403 {
			return fmt.Errorf("GET %d, DELETE %d; want 200 and 403", get, del)
		}
		return nil
	})
	kubeconfig := need(t).cluster.Kubeconfig
	explain := func(method string) (string, int) {
		return meshid(t, "", "policy", "explain", "--kubeconfig", kubeconfig, "-n", ns, "--to", "db-0", "--port", dbPort,
			"--from", ns+"/web", "--method", method, "--path", "/api/x")
	}
	if out, code := explain("DELETE"); code != 1 || !strings.Contains(out, "denied by "+ns+"/db rule web-reads (method_not_allowed)") || !strings.Contains(out, "1 AuthorizationPolicies select it (db)") {
		t.Fatalf("explain DELETE: exit %d\n%s", code, out)
	}
	if out, code := explain("GET"); code != 0 || !strings.Contains(out, "allowed by "+ns+"/db rule web-reads") {
		t.Fatalf("explain GET: exit %d\n%s", code, out)
	}

	if out, err := apply(policy("audit", "/api")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	eventually(t, 10*time.Second, func() error {
		if del := status("DELETE"); del != 200 {
			return fmt.Errorf("DELETE in audit mode: %d, want 200", del)
		}
		return nil
	})
	if out, code := explain("DELETE"); code != 0 || !strings.Contains(out, "allowed in audit mode") {
		t.Fatalf("explain DELETE in audit mode: exit %d\n%s", code, out)
	}
}

// TestTransparentRequestPolicy: request rules on a transparent pod's port:
// a meshed caller's requests (the app's HTTP inside meshid mTLS, which the
// redirect sent through both proxies) are decided one by one, and the
// node's probe still passes as a byte pipe.
func TestTransparentRequestPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newTransparentMesh(t, ctx)
	ns := m.namespace(nil)
	b := m.run(ns, "b", nil)
	a := m.run(ns, "a", nil)
	ap := fmt.Sprintf(`apiVersion: meshid.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: b}
spec:
  selector: {matchLabels: {app: b}}
  port: 8080
  allow: [{serviceAccount: %[1]s/a}]
  requests:
    rules:
    - name: reads
      from: [{serviceAccount: %[1]s/a}]
      matches:
      - {method: GET, path: {value: /api}}
`, ns)
	if out, err := kubectl(t, ap, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	curl := func(method, path string) string {
		out, _ := a.Exec(m.ctx, "curl", "-sS", "--max-time", "15", "--path-as-is", "-X", method, "-w", " %{http_code}", fmt.Sprintf("http://%s:8080%s", b.IP, path))
		return strings.TrimSpace(string(out))
	}
	eventually(t, 15*time.Second, func() error {
		if got := curl("GET", "/api/x"); !strings.HasPrefix(got, "hello from b") || !strings.HasSuffix(got, " 200") {
			return fmt.Errorf("GET /api/x: %q", got)
		}
		if got := curl("DELETE", "/api/x"); !strings.Contains(got, "rule reads (method_not_allowed)") || !strings.HasSuffix(got, " 403") {
			return fmt.Errorf("DELETE /api/x: %q", got)
		}
		return nil
	})
	if got := curl("GET", "/api/../admin"); !strings.Contains(got, "path_not_allowed") {
		t.Fatalf("GET /api/../admin: %q", got)
	}
	series := fmt.Sprintf(`meshid_proxy_requests_denied_total{policy="%s/b",reason="method_not_allowed",rule="reads"}`, ns)
	if v := m.metric(b, series); v < 1 {
		t.Fatalf("%s = %v", series, v)
	}
}
