package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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
	out, err := inject.Pod(p, nil, inject.Config{Image: "ghcr.io/meshid/meshid-proxy:test", CA: "meshid-ca.meshid.svc:8443"})
	if err != nil {
		t.Fatal(err)
	}
	out.Name, out.ResourceVersion, out.UID = "web-1", "", ""
	if _, err := need(t).client.CoreV1().Pods(ns).Create(context.Background(), out, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("the API server refuses the injected pod: %v", err)
	}
}

// TestInjector: the API server calls meshid-webhook for real. A pod in an
// enabled namespace gets the proxy, token and bundle volumes; a pod that
// opts out, a pod in a namespace that does not opt in, a hostNetwork pod
// and an already injected pod are left alone; the webhook keeps the
// configuration's caBundle equal to its CA.
func TestInjector(t *testing.T) {
	t.Parallel()
	e := need(t)
	ctx := context.Background()
	home := namespace(t, "webhook")
	name, addr := registerInjector(t, home)
	anchor := newAnchor(t, "injector anchor")
	if _, err := e.client.CoreV1().ConfigMaps(home).Create(ctx, bundleConfigMap(anchor.CertPEM()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runWebhook(t, func() error {
		mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("the caBundle is not synced yet")
		}
		return nil
	}, "-n", home, "--listen", addr, "--ip", "127.0.0.1", "--mutating-webhook", name, "--validating-webhook=", "--proxy-image", "ghcr.io/meshid/meshid-proxy:e2e")
	ca, err := e.client.CoreV1().Secrets(home).Get(ctx, "meshid-webhook-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mwc, _ := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if string(mwc.Webhooks[0].ClientConfig.CABundle) != string(ca.Data["tls.crt"]) {
		t.Fatal("the caBundle is not the webhook CA")
	}

	labelled := func(mode string) string {
		ns := namespace(t, "inj")
		n, err := e.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels["meshid-e2e"] = name
		if mode != "" {
			n.Labels[inject.NamespaceLabel] = mode
		}
		if _, err := e.client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		serviceAccount(t, ns, "web")
		return ns
	}
	enabled, plain := labelled("enabled"), labelled("")
	create := func(ns, podName string, mutate func(*corev1.Pod)) *corev1.Pod {
		t.Helper()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podName},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
		}
		if mutate != nil {
			mutate(pod)
		}
		got, err := e.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, podName, err)
		}
		return got
	}
	proxies := func(pod *corev1.Pod) int {
		n := 0
		for _, c := range pod.Spec.Containers {
			if c.Name == "meshid-proxy" {
				n++
			}
		}
		return n
	}

	injected := create(enabled, "web-0", nil)
	if proxies(injected) != 1 || injected.Annotations["meshid.dev/injected"] != "ghcr.io/meshid/meshid-proxy:e2e" {
		t.Fatalf("pod in an enabled namespace: %d proxies, annotations %v", proxies(injected), injected.Annotations)
	}
	volumes := map[string]bool{}
	for _, v := range injected.Spec.Volumes {
		volumes[v.Name] = true
	}
	if !volumes["meshid-token"] || !volumes["meshid-trust-bundle"] {
		t.Fatalf("volumes %v lack the token or the bundle", volumes)
	}
	again := create(enabled, "web-1", func(p *corev1.Pod) {
		p.Spec.Containers, p.Spec.Volumes, p.Annotations = injected.Spec.Containers, injected.Spec.Volumes, injected.Annotations
		for i := range p.Spec.Containers { // drop what the API server added for the first pod
			p.Spec.Containers[i].VolumeMounts = filterMounts(p.Spec.Containers[i].VolumeMounts)
		}
		p.Spec.Volumes = filterVolumes(p.Spec.Volumes)
	})
	if proxies(again) != 1 {
		t.Fatalf("an injected spec created again has %d proxies", proxies(again))
	}
	if n := proxies(create(enabled, "opt-out", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshid.dev/inject": "disabled"} })); n != 0 {
		t.Fatal("a pod that opts out was injected")
	}
	if n := proxies(create(plain, "web-0", nil)); n != 0 {
		t.Fatal("a pod in a namespace that does not opt in was injected")
	}
	if n := proxies(create(plain, "asks", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshid.dev/inject": "enabled"} })); n != 1 {
		t.Fatal("a pod that asks for injection was not injected")
	}
	if n := proxies(create(enabled, "host", func(p *corev1.Pod) { p.Spec.HostNetwork = true })); n != 0 {
		t.Fatal("a hostNetwork pod was injected")
	}
	// The pods can mount the trust bundle: a copy is in their namespace,
	// and follows the source.
	for _, ns := range []string{enabled, plain} {
		cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil || cm.Data["ca-bundle.crt"] != string(anchor.CertPEM()) {
			t.Fatalf("no trust bundle copy in %s for its injected pods: %v", ns, err)
		}
	}
	next := newAnchor(t, "next injector anchor")
	src, _ := e.client.CoreV1().ConfigMaps(home).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
	src.Data["ca-bundle.crt"] = string(anchor.CertPEM()) + string(next.CertPEM())
	if _, err := e.client.CoreV1().ConfigMaps(home).Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		cm, err := e.client.CoreV1().ConfigMaps(enabled).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil || cm.Data["ca-bundle.crt"] != src.Data["ca-bundle.crt"] {
			return fmt.Errorf("the copy in %s does not follow the source yet", enabled)
		}
		return nil
	})

	// meshid check reports the webhook CA and the caBundle's sync.
	out, _ := meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", home, "--deployment", "")
	if !hasRow(out, "webhook CA", "OK") {
		t.Fatalf("check does not report the webhook CA:\n%s", out)
	}
}

// runWebhook runs meshid-webhook (admin kubeconfig, then args) and waits
// until it serves and synced returns nil.
func runWebhook(t *testing.T, synced func() error, args ...string) *process {
	t.Helper()
	p, exited := spawn(t, "meshid-webhook", append([]string{"--kubeconfig", need(t).cluster.Kubeconfig}, args...)...)
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("meshid-webhook exited: %v\n%s", err, p.logs(t))
		default:
		}
		if !strings.Contains(p.logs(t), "serving admission webhooks") {
			return fmt.Errorf("meshid-webhook is not serving yet")
		}
		return synced()
	})
	return p
}

// filterMounts and filterVolumes drop the service-account token volume the
// API server adds, so a pod spec can be created again.
func filterMounts(ms []corev1.VolumeMount) []corev1.VolumeMount {
	var out []corev1.VolumeMount
	for _, m := range ms {
		if !strings.HasPrefix(m.Name, "kube-api-access") {
			out = append(out, m)
		}
	}
	return out
}

func filterVolumes(vs []corev1.Volume) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range vs {
		if !strings.HasPrefix(v.Name, "kube-api-access") {
			out = append(out, v)
		}
	}
	return out
}

// registerInjector registers a mutating webhook that sends the pods of
// namespaces labelled meshid-e2e=NAME to https://ADDR/inject (no CA bundle:
// meshid-webhook fills it in), removed when the test ends.
func registerInjector(t *testing.T, home string) (name, addr string) {
	t.Helper()
	name = "meshid-injector-" + home
	addr = freeAddr(t)
	url := "https://" + addr + "/inject"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	_, err := env.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "inject.meshid.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"meshid-e2e": name}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name, addr
}
