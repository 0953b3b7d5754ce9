package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

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

// TestTransparentMesh: pods injected with nothing but the namespace label
// talk mTLS to each other by pod IP and by Service, unmodified, on a node of
// network namespaces; policy admits by identity; unmeshed destinations get
// plain, or a refusal under deny-unmeshed; the kubelet's probes pass in
// default deny and nothing else from the node does.
func TestTransparentMesh(t *testing.T) {
	e := need(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the node is made of network namespaces")
	}
	for _, tool := range []string{"ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install iproute2 curl)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", policyCRD()); err != nil {
		t.Fatalf("apply the CRD: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/authorizationpolicies.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	ca := startCA(t, "--discovery", "--watch-policies")
	stopSlices, err := node.StartEndpointSliceController(e.cpBin, e.cluster.Kubeconfig, filepath.Join(t.TempDir(), "kcm.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopSlices)
	selector := startInjector(t, ca)

	labelled := func(labels map[string]string) string {
		ns := namespace(t, "mesh")
		n, err := e.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels["meshid-e2e"] = selector
		n.Labels[inject.NamespaceLabel] = "enabled"
		for k, v := range labels {
			n.Labels[k] = v
		}
		if _, err := e.client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ns := labelled(nil)
	locked := labelled(map[string]string{inject.EgressLabel: "deny-unmeshed"})

	nodeName := "node-" + ns
	n, err := node.New(ctx, node.Config{
		Client: e.client, Name: nodeName, CA: ca.addr, CAID: ca.id(t).String(),
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
			t.Logf("node logs:\n%s", n.Logs())
		}
		n.Close()
	})

	// run creates a pod (the injector mutates it), schedules it to the node
	// and runs it there.
	run := func(namespace, name string, annotations map[string]string) *node.Pod {
		t.Helper()
		serviceAccount(t, namespace, name)
		created, err := e.client.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}, Annotations: annotations},
			Spec: corev1.PodSpec{
				NodeName: nodeName, ServiceAccountName: name,
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
		p, err := n.Run(ctx, created)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	b := run(ns, "b", nil)
	a := run(ns, "a", nil)
	c := run(ns, "c", nil)
	u := run(ns, "u", map[string]string{inject.PodAnnotation: "disabled"})
	u2 := run(ns, "u2", map[string]string{inject.PodAnnotation: "disabled"})
	d := run(locked, "d", nil)

	if out, err := kubectl(t, fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: b\nspec:\n  selector:\n    matchLabels: {app: b}\n  port: 8080\n  mode: deny\n  allow:\n  - serviceAccount: %s/a\n", ns), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	svc, err := e.client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "b"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "b"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		slices, err := e.client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=b"})
		if err != nil {
			return err
		}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) > 0 && ep.Addresses[0] == b.IP.String() {
					return nil
				}
			}
		}
		return fmt.Errorf("the EndpointSlice controller has not published b (%s) yet: %v", b.IP, slices.Items)
	})

	// curl is the unmodified client: it dials the address it is given.
	curl := func(from *node.Pod, url string) (string, error) {
		out, err := from.Exec(ctx, "curl", "-sS", "--max-time", "15", url)
		return string(out), err
	}
	metric := func(p *node.Pod, series string) float64 {
		t.Helper()
		resp, err := n.HTTPClient().Get(fmt.Sprintf("http://%s:15000/metrics", p.IP))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				var v float64
				fmt.Sscan(rest, &v)
				return v
			}
		}
		return 0
	}
	id := func(namespace, sa string) string {
		return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, namespace, sa)
	}
	forwarded := func(dir, mesh, peer, transport string) string {
		return fmt.Sprintf(`meshid_proxy_forwarded_total{direction=%q,mesh=%q,peer_id=%q,transport=%q}`, dir, mesh, peer, transport)
	}

	t.Run("a calls b by pod IP and by Service, in mTLS", func(t *testing.T) {
		// The policy reaches b's proxy through the CA's stream: wait for it.
		eventually(t, 15*time.Second, func() error {
			out, err := curl(a, fmt.Sprintf("http://%s:8080/", b.IP))
			if err != nil || !strings.Contains(out, "hello from b") {
				return fmt.Errorf("a -> b: %q, %v", out, err)
			}
			return nil
		})
		if v := metric(a, "meshid_proxy_discovery_connected"); v != 1 {
			t.Errorf("a's discovery stream: connected %v, want 1", v)
		}
		if out, err := curl(a, fmt.Sprintf("http://%s:80/", svc.Spec.ClusterIP)); err != nil || !strings.Contains(out, "hello from b") {
			t.Fatalf("a -> Service b (%s:80): %q, %v", svc.Spec.ClusterIP, out, err)
		}
		if v := metric(a, forwarded("outbound", "meshed", id(ns, "b"), "tls1.3")); v < 2 {
			t.Errorf("a's proxy forwarded %v connections in TLS 1.3 to %s, want at least 2 (pod IP and Service)", v, id(ns, "b"))
		}
		if v := metric(b, forwarded("inbound", "meshed", id(ns, "a"), "tls1.3")); v < 2 {
			t.Errorf("b's proxy accepted %v connections in TLS 1.3 from %s, want at least 2", v, id(ns, "a"))
		}
	})
	t.Run("b's policy refuses c", func(t *testing.T) {
		if out, err := curl(c, fmt.Sprintf("http://%s:8080/", b.IP)); err == nil {
			t.Fatalf("c -> b answered %q; b's policy admits only a", out)
		}
		if v := metric(b, fmt.Sprintf(`meshid_proxy_policy_denials_total{peer_id=%q,port="8080"}`, id(ns, "c"))); v < 1 {
			t.Errorf("b's proxy counted %v denials of c", v)
		}
	})
	t.Run("a meshed pod calls an unmeshed one in plain", func(t *testing.T) {
		if out, err := curl(a, fmt.Sprintf("http://%s:8080/", u.IP)); err != nil || !strings.Contains(out, "hello from u") {
			t.Fatalf("a -> u: %q, %v", out, err)
		}
		if v := metric(a, forwarded("outbound", "unmeshed", "", "plain")); v < 1 {
			t.Errorf("a's proxy forwarded %v plain connections to unmeshed pods", v)
		}
	})
	t.Run("deny-unmeshed refuses it", func(t *testing.T) {
		if out, err := curl(d, fmt.Sprintf("http://%s:8080/", u.IP)); err == nil {
			t.Fatalf("d (deny-unmeshed) -> u answered %q", out)
		}
		if v := metric(d, `meshid_proxy_handshake_failures_total{direction="outbound",reason="unmeshed_refused"}`); v < 1 {
			t.Errorf("d's proxy counted %v refusals of unmeshed destinations", v)
		}
	})
	t.Run("a destination the CA cannot answer for is refused, not sent in plain", func(t *testing.T) {
		// a has never dialled u2: only the CA can say who is behind it,
		// and the CA is frozen. u2 would answer in plain.
		if err := syscall.Kill(ca.pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		out, err := curl(a, fmt.Sprintf("http://%s:8080/", u2.IP))
		if err := syscall.Kill(ca.pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err == nil {
			t.Fatalf("a -> u2 with the CA frozen answered %q", out)
		}
		if v := metric(a, `meshid_proxy_handshake_failures_total{direction="outbound",reason="destination_unresolved"}`); v < 1 {
			t.Errorf("a's proxy counted %v unresolved destinations", v)
		}
		if v := metric(a, forwarded("outbound", "unmeshed", "", "plain")); v != 1 {
			t.Errorf("a's proxy forwarded %v plain connections, want only the one to u:8080 before", v)
		}
	})
	t.Run("probes from the node pass, nothing else does", func(t *testing.T) {
		// The node already ran b's readiness probe to mark it Ready.
		if v := metric(b, forwarded("inbound", "unmeshed", "", "plain")); v < 1 {
			t.Errorf("b's proxy forwarded %v plain probes", v)
		}
		resp, err := n.HTTPClient().Get(fmt.Sprintf("http://%s:8080/admin", b.IP))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET /admin from the node got %s; only the probe's path may pass", resp.Status)
		}
		if v := metric(b, `meshid_proxy_handshake_failures_total{direction="inbound",reason="plaintext_refused"}`); v < 1 {
			t.Errorf("b's proxy counted %v plain refusals", v)
		}
		if resp, err := n.HTTPClient().Get(fmt.Sprintf("http://%s:8080/healthz", b.IP)); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the probe from the node: %v, %v", resp, err)
		}
	})
}
