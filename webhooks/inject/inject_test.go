package inject_test

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sidecar"
	"github.com/meshid/meshid/webhooks/inject"
)

var cfg = inject.Config{Image: "ghcr.io/meshid/meshid-proxy:test", CA: "meshid-ca.meshid.svc:8443"}

func pod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
}

func TestDecide(t *testing.T) {
	enabled := map[string]string{inject.NamespaceLabel: "enabled"}
	injected, _ := inject.Pod(pod(nil), nil, cfg)
	host := pod(nil)
	host.Spec.HostNetwork = true
	tests := []struct {
		name   string
		pod    *corev1.Pod
		labels map[string]string
		want   bool
	}{
		{"namespace enabled", pod(nil), enabled, true},
		{"pod enabled", pod(map[string]string{inject.PodAnnotation: "enabled"}), nil, true},
		{"pod disabled in an enabled namespace", pod(map[string]string{inject.PodAnnotation: "disabled"}), enabled, false},
		{"neither", pod(nil), nil, false},
		{"already injected", injected, enabled, false},
		{"hostNetwork", host, enabled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := inject.Decide(tt.pod, tt.labels)
			if got != tt.want || reason == "" {
				t.Fatalf("Decide = %v (%q), want %v with a reason", got, reason, tt.want)
			}
		})
	}
}

func TestPod(t *testing.T) {
	in := pod(map[string]string{
		inject.InboundAnnotation:  "8443=8080",
		inject.OutboundAnnotation: "9000=db.shop.svc:8443;id=spiffe://cluster.local/ns/shop/sa/db",
		inject.ImageAnnotation:    "custom:2",
	})
	out, err := inject.Pod(in, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Spec.Containers) != 1 {
		t.Fatal("Pod modified its input")
	}
	var proxy *corev1.Container
	for i := range out.Spec.Containers {
		if out.Spec.Containers[i].Name == inject.ContainerName {
			proxy = &out.Spec.Containers[i]
		}
	}
	if proxy == nil || proxy.Image != "custom:2" || out.Annotations[inject.InjectedAnnotation] != "custom:2" {
		t.Fatalf("proxy container %+v, annotations %v", proxy, out.Annotations)
	}
	args := strings.Join(proxy.Args, " ")
	for _, want := range []string{"--inbound=:8443=127.0.0.1:8080", "--outbound=127.0.0.1:9000=db.shop.svc:8443,id=spiffe://cluster.local/ns/shop/sa/db", "--token-file=/var/run/secrets/meshid/token"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range out.Spec.Volumes {
		if v.Projected != nil {
			token = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	if token == nil || token.Audience != identity.DefaultAudience || *token.ExpirationSeconds < 600 {
		t.Fatalf("token projection %+v", token)
	}
	if _, err := inject.Pod(pod(map[string]string{inject.InboundAnnotation: "8443"}), nil, cfg); err == nil {
		t.Fatal("a malformed inbound annotation was accepted")
	}
}

// TestPodTransparent: meshid-init comes first, with NET_ADMIN only and the
// pod's skips (explicit inbound ports among them); the proxy is
// transparent, with the namespace's egress mode and the app's plain HTTP
// probes (named ports resolved, HTTPS left out).
func TestPodTransparent(t *testing.T) {
	in := pod(map[string]string{
		inject.InboundAnnotation:            "8443=8080",
		sidecar.SkipInboundPortsAnnotation:  "9100",
		sidecar.SkipOutboundPortsAnnotation: "5432",
		sidecar.SkipOutboundCIDRsAnnotation: "169.254.169.254/32",
	})
	in.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "app:1"}}
	app := &in.Spec.Containers[0]
	app.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "ready", Port: intstr.FromInt(8081)}}}
	app.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/tls", Port: intstr.FromInt(8443), Scheme: corev1.URISchemeHTTPS}}}

	out, err := inject.Pod(in, map[string]string{inject.EgressLabel: "deny-unmeshed"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Spec.InitContainers) != 2 || out.Spec.InitContainers[0].Name != inject.InitName {
		t.Fatalf("init containers %+v: want meshid-init first", out.Spec.InitContainers)
	}
	init := out.Spec.InitContainers[0]
	wantInit := "--proxy-uid=65532 --admin-port=15000 --state-file=/var/run/meshid-redirect/state.json --skip-inbound-ports=9100,8443 --skip-outbound-cidrs=169.254.169.254/32 --skip-outbound-ports=5432"
	if got := strings.Join(init.Args, " "); got != wantInit || init.Command[0] != "meshid-init" {
		t.Errorf("meshid-init %v %q, want %q", init.Command, got, wantInit)
	}
	caps := init.SecurityContext.Capabilities
	if len(caps.Add) != 1 || caps.Add[0] != "NET_ADMIN" || len(caps.Drop) != 1 || caps.Drop[0] != "ALL" {
		t.Errorf("meshid-init capabilities %+v: want NET_ADMIN only", caps)
	}
	proxy := out.Spec.Containers[len(out.Spec.Containers)-1]
	args := strings.Join(proxy.Args, " ")
	for _, want := range []string{"--transparent", "--redirect-state-file=/var/run/meshid-redirect/state.json", "--policy-from-ca", "--egress=deny-unmeshed", "--probe=8080=/healthz", "--probe=8081=/ready"} {
		if !strings.Contains(args, want) {
			t.Errorf("proxy args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "/tls") {
		t.Errorf("proxy args %q admit an HTTPS probe in plain", args)
	}
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if env["POD_NAME"] != "metadata.name" || env["HOST_IP"] != "status.hostIP" {
		t.Errorf("proxy env %v: want POD_NAME (for --policy-from-ca) and HOST_IP (for probes) from the downward API", env)
	}
	if c := proxy.SecurityContext.Capabilities; len(c.Add) != 0 {
		t.Errorf("the proxy adds capabilities %v; it needs none", c.Add)
	}
	if out.Annotations[sidecar.TransparentAnnotation] != "enabled" || out.Annotations[sidecar.SkipInboundPortsAnnotation] != "9100,8443" {
		t.Errorf("annotations %v", out.Annotations)
	}
	if _, err := inject.Pod(pod(nil), map[string]string{inject.EgressLabel: "open"}, cfg); err == nil {
		t.Error("a bad egress label was accepted")
	}
}

// TestPodDefaultMode: injection breaks no caller by default
// (all-unauthenticated); a namespace label, then a pod annotation, make it
// stricter; an unknown mode is refused with the place it came from.
func TestPodDefaultMode(t *testing.T) {
	strict := cfg
	strict.DefaultMode = "cluster-authenticated"
	tests := []struct {
		name       string
		cfg        inject.Config
		annotation string // "" means none
		label      string
		want       string // the proxy's --default-mode, or the error
	}{
		{name: "default", cfg: cfg, want: "all-unauthenticated"},
		{name: "the webhook's flag", cfg: strict, want: "cluster-authenticated"},
		{name: "namespace label over the flag", cfg: strict, label: "deny", want: "deny"},
		{name: "pod annotation over the label", cfg: strict, label: "deny", annotation: "all-authenticated", want: "all-authenticated"},
		{name: "unknown mode in the label", cfg: cfg, label: "allow-all", want: "inject: namespace label meshid.dev/default-mode: policy: invalid policy: unknown mode \"allow-all\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			annotations := map[string]string{}
			if tt.annotation != "" {
				annotations[inject.DefaultModeKey] = tt.annotation
			}
			labels := map[string]string{}
			if tt.label != "" {
				labels[inject.DefaultModeKey] = tt.label
			}
			out, err := inject.Pod(pod(annotations), labels, tt.cfg)
			if strings.HasPrefix(tt.want, "inject:") {
				if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
					t.Fatalf("Pod = %v, want an error starting %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var proxy corev1.Container
			for _, c := range out.Spec.Containers {
				if c.Name == inject.ContainerName {
					proxy = c
				}
			}
			if !slices.Contains(proxy.Args, "--default-mode="+tt.want) {
				t.Fatalf("proxy args %v, want --default-mode=%s", proxy.Args, tt.want)
			}
		})
	}
}
