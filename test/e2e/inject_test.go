package e2e_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/webhooks/inject"
)

// TestInjectedPodIsValid: the pod the injector builds is accepted by the
// API server as is (server-side validation, dry run).
func TestInjectedPodIsValid(t *testing.T) {
	t.Parallel()
	ns := namespace(t, "inject")
	serviceAccount(t, ns, "web")
	p := pod(t, ns, "web-0", "web")
	p.Annotations = map[string]string{inject.InboundAnnotation: "8443=8080", inject.OutboundAnnotation: "9000=db:8443;id=spiffe://cluster.local/ns/x/sa/db"}
	out, err := inject.Pod(p, inject.Config{Image: "ghcr.io/meshid/meshid-proxy:test", CA: "meshid-ca.meshid.svc:8443"})
	if err != nil {
		t.Fatal(err)
	}
	out.Name, out.ResourceVersion, out.UID = "web-1", "", ""
	if _, err := need(t).client.CoreV1().Pods(ns).Create(context.Background(), out, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("the API server refuses the injected pod: %v", err)
	}
}
