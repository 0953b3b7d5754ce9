package inject_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/identity"
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
	injected, _ := inject.Pod(pod(nil), cfg)
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
	out, err := inject.Pod(in, cfg)
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
	if _, err := inject.Pod(pod(map[string]string{inject.InboundAnnotation: "8443"}), cfg); err == nil {
		t.Fatal("a malformed inbound annotation was accepted")
	}
}
