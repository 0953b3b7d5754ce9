package e2e_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/proxy"
	"github.com/meshid/meshid/sidecar"
	"github.com/meshid/meshid/test/node"
	"github.com/meshid/meshid/webhooks/inject"
)

// policyCRD is the AuthorizationPolicy CRD's file.
func policyCRD() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "api", "policy", "crd", "meshid.dev_authorizationpolicies.yaml")
}

// startInjector runs meshid-webhook as the injector of namespaces labelled
// meshid-e2e=NAME, with the CA's anchors as the trust bundle it copies to
// them, and returns NAME.
func startInjector(t *testing.T, ca *caProcess) string {
	t.Helper()
	e := need(t)
	ctx := context.Background()
	home := namespace(t, "injector")
	name, addr := registerInjector(t, home)
	if _, err := e.client.CoreV1().ConfigMaps(home).Create(ctx, bundleConfigMap(ca.anchor.CertPEM()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runWebhook(t, func() error {
		mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("the caBundle is not synced yet")
		}
		return nil
	}, "-n", home, "--listen", addr, "--ip", "127.0.0.1", "--mutating-webhook", name, "--validating-webhook=", "--proxy-image", "meshid-proxy:e2e")
	return name
}

// transparentMesh is what every test of transparent pods starts from: a
// node of network namespaces, meshid-ca with discovery and policies, the
// real EndpointSlice controller and the injector.
type transparentMesh struct {
	t        *testing.T
	ctx      context.Context
	ca       *caProcess
	node     *node.Node
	name     string // the Node object's
	selector string // startInjector's
}

// newTransparentMesh starts one, meshid-ca with caArgs besides discovery
// and policies. It needs root, ip(8) and curl: without them it skips t.
func newTransparentMesh(t *testing.T, ctx context.Context, caArgs ...string) *transparentMesh {
	t.Helper()
	e := need(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the node is made of network namespaces")
	}
	for _, tool := range []string{"ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 curl)", tool)
		}
	}
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", policyCRD()); err != nil {
		t.Fatalf("apply the CRD: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/authorizationpolicies.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	m := &transparentMesh{t: t, ctx: ctx, ca: startCA(t, append([]string{"--discovery", "--watch-policies"}, caArgs...)...)}
	stopSlices, err := node.StartEndpointSliceController(e.cpBin, e.cluster.Kubeconfig, filepath.Join(t.TempDir(), "kcm.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopSlices)
	m.selector = startInjector(t, m.ca)
	m.name = "node-" + m.ca.ns
	m.node, err = node.New(ctx, node.Config{
		Client: e.client, Name: m.name, CA: m.ca.addr, CAID: m.ca.id(t).String(),
		Binaries: map[string]string{
			"meshid-proxy:e2e": filepath.Join(e.bin, "meshid-proxy"),
			inject.InitName:    filepath.Join(e.bin, "meshid-init"),
			"hello:e2e":        filepath.Join(e.bin, "hello"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node logs:\n%s", m.node.Logs())
		}
		m.node.Close()
	})
	return m
}

// namespace creates a namespace the injector injects, with labels.
func (m *transparentMesh) namespace(labels map[string]string) string {
	t := m.t
	t.Helper()
	e := need(t)
	ns := namespace(t, "mesh")
	n, err := e.client.CoreV1().Namespaces().Get(m.ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["meshid-e2e"] = m.selector
	n.Labels[inject.NamespaceLabel] = "enabled"
	for k, v := range labels {
		n.Labels[k] = v
	}
	if _, err := e.client.CoreV1().Namespaces().Update(m.ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// run creates a pod of hello on :8080 with a readiness probe (the
// injector mutates it), schedules it to the node and runs it there.
func (m *transparentMesh) run(namespace, name string, annotations map[string]string) *node.Pod {
	t := m.t
	t.Helper()
	serviceAccount(t, namespace, name)
	created, err := need(t).client.CoreV1().Pods(namespace).Create(m.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName: m.name, ServiceAccountName: name,
			Containers: []corev1.Container{{
				Name: "app", Image: "hello:e2e", Args: []string{"--listen=:8080", "--name=" + name},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/healthz", Port: intstr.FromString("http"),
				}}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.node.Run(m.ctx, created)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// service creates Service name (port 80 to the pods labelled app=name,
// port http) and waits until the EndpointSlice controller has published
// pod behind it.
func (m *transparentMesh) service(ns, name string, pod *node.Pod) *corev1.Service {
	t := m.t
	t.Helper()
	e := need(t)
	svc, err := e.client.CoreV1().Services(ns).Create(m.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		slices, err := e.client.DiscoveryV1().EndpointSlices(ns).List(m.ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
		if err != nil {
			return err
		}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) > 0 && ep.Addresses[0] == pod.IP.String() {
					return nil
				}
			}
		}
		return fmt.Errorf("the EndpointSlice controller has not published %s (%s) yet: %v", name, pod.IP, slices.Items)
	})
	return svc
}

// curl runs curl, the unmodified client, in from: it dials the address it
// is given.
func (m *transparentMesh) curl(from *node.Pod, url string) (string, error) {
	out, err := from.Exec(m.ctx, "curl", "-sS", "--max-time", "15", url)
	return string(out), err
}

// metric reads one series from p's proxy, from the node (0 if absent).
func (m *transparentMesh) metric(p *node.Pod, series string) float64 {
	m.t.Helper()
	return metricAt(m.t, m.node.HTTPClient(), m.admin(p), series)
}

// admin is the URL of p's proxy's admin endpoint.
func (m *transparentMesh) admin(p *node.Pod) string {
	return "http://" + netip.AddrPortFrom(p.IP, sidecar.AdminPort).String()
}

// podID is the SPIFFE ID of service account sa of namespace ns.
func podID(ns, sa string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, ns, sa)
}

// forwarded is the series of meshid_proxy_forwarded_total with these labels.
func forwarded(dir, mesh, peer, transport string) string {
	return fmt.Sprintf(`meshid_proxy_forwarded_total{direction=%q,mesh=%q,peer_id=%q,transport=%q}`, dir, mesh, peer, transport)
}

// TestTransparentMesh: pods injected with nothing but the namespace label
// talk mTLS to each other by pod IP and by Service, unmodified, on a node of
// network namespaces; policy admits by identity; unmeshed destinations get
// plain, or a refusal under deny-unmeshed; the kubelet's probes pass in
// default deny and nothing else from the node does. Bad input: a plain
// client on a deny port, a TLS client with no or a foreign certificate
// are refused; a discovery stream that breaks leaves the last answers in
// force for a bounded time, then connections fail closed.
func TestTransparentMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newTransparentMesh(t, ctx)
	ns := m.namespace(nil)
	locked := m.namespace(map[string]string{inject.EgressLabel: "deny-unmeshed"})

	b := m.run(ns, "b", nil)
	a := m.run(ns, "a", nil)
	c := m.run(ns, "c", nil)
	u := m.run(ns, "u", map[string]string{inject.PodAnnotation: "disabled"})
	u2 := m.run(ns, "u2", map[string]string{inject.PodAnnotation: "disabled"})
	d := m.run(locked, "d", nil)

	if out, err := kubectl(t, fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: b\nspec:\n  selector:\n    matchLabels: {app: b}\n  port: 8080\n  mode: deny\n  allow:\n  - serviceAccount: %s/a\n", ns), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	svc := m.service(ns, "b", b)

	t.Run("a calls b by pod IP and by Service, in mTLS", func(t *testing.T) {
		// The policy reaches b's proxy through the CA's stream: wait for it.
		eventually(t, 15*time.Second, func() error {
			out, err := m.curl(a, fmt.Sprintf("http://%s:8080/", b.IP))
			if err != nil || !strings.Contains(out, "hello from b") {
				return fmt.Errorf("a -> b: %q, %v", out, err)
			}
			return nil
		})
		if v := m.metric(a, "meshid_proxy_discovery_connected"); v != 1 {
			t.Errorf("a's discovery stream: connected %v, want 1", v)
		}
		if out, err := m.curl(a, fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)); err != nil || !strings.Contains(out, "hello from b") {
			t.Fatalf("a -> Service b (%s:80): %q, %v", svc.Spec.ClusterIP, out, err)
		}
		if v := m.metric(a, forwarded("outbound", "meshed", podID(ns, "b"), "tls1.3")); v < 2 {
			t.Errorf("a's proxy forwarded %v connections in TLS 1.3 to %s, want at least 2 (pod IP and Service)", v, podID(ns, "b"))
		}
		if v := m.metric(b, forwarded("inbound", "meshed", podID(ns, "a"), "tls1.3")); v < 2 {
			t.Errorf("b's proxy accepted %v connections in TLS 1.3 from %s, want at least 2", v, podID(ns, "a"))
		}
	})
	t.Run("b's policy refuses c", func(t *testing.T) {
		if out, err := m.curl(c, fmt.Sprintf("http://%s:8080/", b.IP)); err == nil {
			t.Fatalf("c -> b answered %q; b's policy admits only a", out)
		}
		if v := m.metric(b, fmt.Sprintf(`meshid_proxy_policy_denials_total{peer_id=%q,port="8080"}`, podID(ns, "c"))); v < 1 {
			t.Errorf("b's proxy counted %v denials of c", v)
		}
	})
	t.Run("a meshed pod calls an unmeshed one in plain", func(t *testing.T) {
		if out, err := m.curl(a, fmt.Sprintf("http://%s:8080/", u.IP)); err != nil || !strings.Contains(out, "hello from u") {
			t.Fatalf("a -> u: %q, %v", out, err)
		}
		if v := m.metric(a, forwarded("outbound", "unmeshed", "", "plain")); v < 1 {
			t.Errorf("a's proxy forwarded %v plain connections to unmeshed pods", v)
		}
	})
	t.Run("deny-unmeshed refuses it", func(t *testing.T) {
		if out, err := m.curl(d, fmt.Sprintf("http://%s:8080/", u.IP)); err == nil {
			t.Fatalf("d (deny-unmeshed) -> u answered %q", out)
		}
		if v := m.metric(d, `meshid_proxy_handshake_failures_total{direction="outbound",reason="unmeshed_refused"}`); v < 1 {
			t.Errorf("d's proxy counted %v refusals of unmeshed destinations", v)
		}
	})
	t.Run("a destination the CA cannot answer for is refused, not sent in plain", func(t *testing.T) {
		// a has never dialled u2: only the CA can say who is behind it,
		// and the CA is frozen. u2 would answer in plain.
		if err := syscall.Kill(m.ca.pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		out, err := m.curl(a, fmt.Sprintf("http://%s:8080/", u2.IP))
		if err := syscall.Kill(m.ca.pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err == nil {
			t.Fatalf("a -> u2 with the CA frozen answered %q", out)
		}
		if v := m.metric(a, `meshid_proxy_handshake_failures_total{direction="outbound",reason="destination_unresolved"}`); v < 1 {
			t.Errorf("a's proxy counted %v unresolved destinations", v)
		}
		if v := m.metric(a, forwarded("outbound", "unmeshed", "", "plain")); v != 1 {
			t.Errorf("a's proxy forwarded %v plain connections, want only the one to u:8080 before", v)
		}
	})
	t.Run("probes from the node pass, nothing else does", func(t *testing.T) {
		// The node already ran b's readiness probe to mark it Ready.
		if v := m.metric(b, forwarded("inbound", "unmeshed", "", "plain")); v < 1 {
			t.Errorf("b's proxy forwarded %v plain probes", v)
		}
		resp, err := m.node.HTTPClient().Get(fmt.Sprintf("http://%s:8080/admin", b.IP))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET /admin from the node got %s; only the probe's path may pass", resp.Status)
		}
		if v := m.metric(b, `meshid_proxy_handshake_failures_total{direction="inbound",reason="plaintext_refused"}`); v < 1 {
			t.Errorf("b's proxy counted %v plain refusals", v)
		}
		if resp, err := m.node.HTTPClient().Get(fmt.Sprintf("http://%s:8080/healthz", b.IP)); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the probe from the node: %v, %v", resp, err)
		}
	})

	failures := func(p *node.Pod, reason string) float64 {
		return m.metric(p, fmt.Sprintf(`meshid_proxy_handshake_failures_total{direction="inbound",reason=%q}`, reason))
	}
	// oneMore is nil once p's proxy counted one refusal for reason more
	// than before: a client may see the refusal before the proxy counts it.
	oneMore := func(p *node.Pod, reason string, before float64) func() error {
		return func() error {
			if got := failures(p, reason) - before; got != 1 {
				return fmt.Errorf("%s's proxy counted %v refusals for %s, want 1", p.Name, got, reason)
			}
			return nil
		}
	}
	bAddr := netip.AddrPortFrom(b.IP, 8080).String()
	t.Run("a plain client on b's deny port is refused", func(t *testing.T) {
		// u is not meshed: its connection reaches b in plain.
		before := failures(b, "plaintext_refused")
		if out, err := m.curl(u, "http://"+bAddr+"/"); err == nil {
			t.Fatalf("u -> b in plain answered %q; b's port is deny", out)
		}
		eventually(t, 10*time.Second, oneMore(b, "plaintext_refused", before))
	})
	t.Run("a TLS client with no certificate or a foreign one is refused", func(t *testing.T) {
		// From u, which no proxy fronts: a client speaking meshid/1 itself.
		foreign := issuertest.Anchor(t, issuertest.Name("a foreign anchor"))
		leaf := issuertest.Leaf(t, foreign, spiffeid.RequireFromString(podID(ns, "a")))
		for _, tc := range []struct {
			name, reason string
			certs        []tls.Certificate
		}{
			{"no certificate", "no_client_certificate", nil},
			{"a's ID from a foreign anchor", "untrusted_certificate", []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}}},
		} {
			before := failures(b, tc.reason)
			if got, err := meshidCall(ctx, u.DialContext, bAddr, tc.certs); err == nil {
				t.Errorf("%s: b answered %q", tc.name, got)
			}
			eventually(t, 10*time.Second, oneMore(b, tc.reason, before))
		}
	})
	t.Run("/identity, meshid check --proxies and meshid verify see transparent pods", func(t *testing.T) {
		doc := m.interception(b)
		r := doc.Redirect
		if !doc.Ready || r.Mode != "transparent" || !r.Present || !r.Matching || r.InboundPort != 15006 || r.OutboundPort != 15001 || r.Problem != "" {
			t.Errorf("b's /identity: %+v, want ready, transparent, the table present and matching on 15006 and 15001", doc)
		}
		if d := doc.Discovery; d == nil || !d.Connected || !d.Fresh || d.LastUpdate.IsZero() {
			t.Errorf("b's discovery on /identity: %+v, want connected, fresh, updated", d)
		}
		out := m.check(b)
		if !regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+OK\s+.*` + regexp.QuoteMeta(podID(ns, "b")) + `, valid for .*; transparent, redirect present and matching, destinations fresh \(updated `).MatchString(out) {
			t.Errorf("meshid check --proxies on b:\n%s", out)
		}
		bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
		if err := os.WriteFile(bundleFile, m.ca.anchor.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		verifyAs := func(sa string) (string, int) {
			// b's app port, 8080: the proxy's transparent listener answers.
			return meshid(t, "", "verify", m.forward(bAddr), "--kubeconfig", need(t).cluster.Kubeconfig, "--as", ns+"/"+sa,
				"--ca", m.ca.addr, "--ca-id", m.ca.id(t).String(), "--trust-bundle-file", bundleFile, "--expect-id", podID(ns, "b"))
		}
		before := m.metric(b, forwarded("inbound", "meshed", podID(ns, "a"), "tls1.3"))
		out, code := verifyAs("a")
		if code != 0 || !regexp.MustCompile(`(?m)^ALPN\s+meshid/1: a transparent meshid-proxy took us for a meshed peer$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^Accepted us\s+yes$`).MatchString(out) || !regexp.MustCompile(`(?m)^TLS\s+TLS 1\.3`).MatchString(out) {
			t.Errorf("meshid verify %s as a exited %d:\n%s", bAddr, code, out)
		}
		if got := m.metric(b, forwarded("inbound", "meshed", podID(ns, "a"), "tls1.3")) - before; got != 1 {
			t.Errorf("b's proxy counted %v meshed connections from a for verify's, want 1", got)
		}
		if out, code := verifyAs("c"); code != 1 || !strings.Contains(out, "the server refused our certificate") {
			t.Errorf("meshid verify %s as c (b's policy refuses it) exited %d:\n%s", bAddr, code, out)
		}
	})
	t.Run("a broken discovery stream: the last answers stay for a bounded time, then a fails closed", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{DialContext: a.DialContext, DisableKeepAlives: true}, Timeout: 15 * time.Second}
		call := func() error { _, err := get(client, bAddr, "x"); return err }
		if err := call(); err != nil {
			t.Fatalf("a -> b before the break: %v", err)
		}
		a.PartitionCA(true)
		defer a.PartitionCA(false)
		eventually(t, 15*time.Second, func() error {
			if v := m.metric(a, "meshid_proxy_discovery_connected"); v != 0 {
				return fmt.Errorf("a's discovery stream: connected %v after the partition", v)
			}
			return nil
		})
		broke := time.Now()
		if err := call(); err != nil {
			t.Errorf("a -> b right after the stream broke: %v; the last answer should stay in use", err)
		}
		unresolved := m.metric(a, `meshid_proxy_handshake_failures_total{direction="outbound",reason="destination_unresolved"}`)
		// The proxy's bound is 30 s from the break it saw (before broke).
		eventually(t, 45*time.Second, func() error {
			if err := call(); err == nil {
				return fmt.Errorf("a -> b still answers %s after the break", time.Since(broke).Round(time.Second))
			}
			return nil
		})
		if v := m.metric(a, `meshid_proxy_handshake_failures_total{direction="outbound",reason="destination_unresolved"}`); v <= unresolved {
			t.Errorf("a's proxy refused b without counting it unresolved (%v before, %v after)", unresolved, v)
		}
		t.Logf("a's proxy refused b %s after the break", time.Since(broke).Round(time.Second))
		if doc := m.interception(a); doc.Ready || !strings.Contains(doc.NotReady, "discovery stream has been down since") || doc.Discovery == nil || doc.Discovery.Fresh {
			t.Errorf("a's /identity with stale destinations: %+v, want not ready for its discovery", doc)
		}
		if code := m.readyCode(a); code != http.StatusServiceUnavailable {
			t.Errorf("a's /ready with stale destinations: %d, want 503", code)
		}
		if out := m.check(a); !regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+.*transparent, but its destinations are stale: the CA's discovery stream is down since `).MatchString(out) {
			t.Errorf("meshid check --proxies on a with stale destinations:\n%s", out)
		}
		a.PartitionCA(false)
		eventually(t, time.Minute, func() error { return call() })
		eventually(t, 30*time.Second, func() error {
			if code := m.readyCode(a); code != http.StatusOK {
				return fmt.Errorf("a's /ready after the stream came back: %d", code)
			}
			return nil
		})
	})
}

// forward is node.Forward to addr, stopped at the test's end.
func (m *transparentMesh) forward(addr string) string {
	m.t.Helper()
	at, stop, err := m.node.Forward(m.ctx, addr)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(stop)
	return at
}

// interception is the redirect and discovery part of a proxy's /identity.
type interception struct {
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready"`
	Redirect struct {
		Mode             string   `json:"mode"`
		Present          bool     `json:"present"`
		Matching         bool     `json:"matching"`
		InboundPort      uint16   `json:"inbound_port"`
		OutboundPort     uint16   `json:"outbound_port"`
		SkipInboundPorts []uint16 `json:"skip_inbound_ports"`
		Problem          string   `json:"problem"`
	} `json:"redirect"`
	Discovery *struct {
		Connected  bool      `json:"connected"`
		Fresh      bool      `json:"fresh"`
		LastUpdate time.Time `json:"last_update"`
	} `json:"discovery"`
}

// interception reads p's proxy's /identity, from the node.
func (m *transparentMesh) interception(p *node.Pod) interception {
	m.t.Helper()
	resp, err := m.node.HTTPClient().Get(m.admin(p) + "/identity")
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc interception
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		m.t.Fatal(err)
	}
	return doc
}

// readyCode is the status of p's proxy's /ready, from the node (0: no
// answer).
func (m *transparentMesh) readyCode(p *node.Pod) int {
	resp, err := m.node.HTTPClient().Get(m.admin(p) + "/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// check runs meshid check --proxies on p's proxy (through forward) and
// returns its output.
func (m *transparentMesh) check(p *node.Pod) string {
	m.t.Helper()
	out, _ := meshid(m.t, "", "check", "--kubeconfig", need(m.t).cluster.Kubeconfig, "-n", m.ca.ns, "--deployment", "",
		"--proxies", m.forward(netip.AddrPortFrom(p.IP, sidecar.AdminPort).String()))
	return out
}

// meshidCall is a client that speaks meshid/1 itself, presenting certs
// (none: no certificate) and verifying nothing: it sends one HTTP request
// to addr over a connection from dial and returns the answer.
func meshidCall(ctx context.Context, dial dialFunc, addr string, certs []tls.Certificate) (string, error) {
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	c := tls.Client(raw, &tls.Config{NextProtos: []string{proxy.ALPN}, MinVersion: tls.VersionTLS13, Certificates: certs,
		InsecureSkipVerify: true}) // the attacker does not care who b is
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// In TLS 1.3 the client's side of the handshake ends before the server
	// has checked the client's certificate: the refusal comes on read.
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	if err == nil && len(out) == 0 {
		err = io.ErrUnexpectedEOF
	}
	return string(out), err
}

// identity reads /identity of p's proxy, from the node.
func (m *transparentMesh) identity(p *node.Pod) identityDoc {
	m.t.Helper()
	return identityAt(m.t, m.node.HTTPClient(), m.admin(p))
}

// TestTransparentRotateAnchor: a full meshid rotate-anchor while an
// unmodified HTTP client in pod a calls pod b by its IP, through both
// transparent proxies: no request fails, every connection the client
// opened went meshed in TLS 1.3 both ways (the proxies' metrics), and both
// proxies end on the new anchor alone.
func TestTransparentRotateAnchor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := newTransparentMesh(t, ctx, "--fleet-report-interval", "500ms")
	ns := m.namespace(map[string]string{inject.DefaultModeKey: "cluster-authenticated"})
	b := m.run(ns, "b", nil)
	a := m.run(ns, "a", nil)
	aToB, bFromA := forwarded("outbound", "meshed", podID(ns, "b"), "tls1.3"), forwarded("inbound", "meshed", podID(ns, "a"), "tls1.3")
	plainOut := forwarded("outbound", "unmeshed", "", "plain")
	before := map[string]float64{"a": m.metric(a, aToB), "b": m.metric(b, bFromA), "plain": m.metric(a, plainOut)}

	tr := startTrafficVia(a.DialContext, netip.AddrPortFrom(b.IP, 8080).String(), "b", 4*time.Millisecond, 20*time.Millisecond)
	out, code := rotateAnchor(t, m.ca)
	tr.end(t)
	if code != 0 || !strings.Contains(out, "rotation done") {
		t.Fatalf("rotate-anchor start exited %d:\n%s", code, out)
	}
	// The proxies count a connection once it is set up, before its first
	// byte reaches the app: every answered request's is counted.
	eventually(t, 10*time.Second, func() error {
		dials := float64(tr.dials.Load())
		if got := m.metric(a, aToB) - before["a"]; got != dials {
			return fmt.Errorf("a's proxy sent %v connections to b meshed in TLS 1.3; the client opened %v", got, dials)
		}
		if got := m.metric(b, bFromA) - before["b"]; got != dials {
			return fmt.Errorf("b's proxy accepted %v connections from a meshed in TLS 1.3; the client opened %v", got, dials)
		}
		return nil
	})
	if got := m.metric(a, plainOut) - before["plain"]; got != 0 {
		t.Errorf("a's proxy sent %v connections in plain during the rotation", got)
	}
	now := rotatedBundle(t, m.ca)
	checkRotated(t, m.ca, now, "a", m.identity(a))
	checkRotated(t, m.ca, now, "b", m.identity(b))
}
