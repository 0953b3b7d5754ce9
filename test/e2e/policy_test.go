package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// crdFile is the generated AuthorizationPolicy CRD.
func crdFile(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "api", "policy", "crd", "meshid.dev_authorizationpolicies.yaml")
}

// startPolicyWebhook applies the CRD and runs meshid-webhook with a
// ValidatingWebhookConfiguration for AuthorizationPolicies in namespaces
// labelled for this test.
func startPolicyWebhook(t *testing.T, selector string) {
	t.Helper()
	e := need(t)
	ctx := context.Background()
	applyPolicyCRD(t)
	home := namespace(t, "policyhook")
	name := "meshid-policy-validation-" + home
	addr := freeAddr(t)
	url := "https://" + addr + "/validate"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	_, err := e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "validate.policy.meshid.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"meshid.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"authorizationpolicies"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"meshid-e2e": selector}},
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
		_ = e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	runWebhook(t, func() error {
		vwc, err := e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(vwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("the caBundle is not synced yet")
		}
		return nil
	}, "-n", home, "--listen", addr, "--ip", "127.0.0.1", "--mutating-webhook=", "--validating-webhook", name, "--proxy-image", "unused:1")
}

// applyPolicyCRD applies the AuthorizationPolicy CRD and waits until it is
// served.
func applyPolicyCRD(t *testing.T) {
	t.Helper()
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", crdFile(t)); err != nil {
		t.Fatalf("apply the CRD: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/authorizationpolicies.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
}

func labelNamespace(t *testing.T, ns, key, value string) {
	t.Helper()
	ctx := context.Background()
	n, err := need(t).client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels[key] = value
	if _, err := need(t).client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestAuthorizationPolicy: an invalid AuthorizationPolicy is refused at
// kubectl apply with the webhook's message; applying, changing and deleting
// one changes what a running proxy (policy from the CA) allows within 5 s,
// without a restart, proven by real connections.
func TestAuthorizationPolicy(t *testing.T) {
	t.Parallel()
	ca := startCA(t, "--watch-policies")
	ns := namespace(t, "authz")
	startPolicyWebhook(t, ns)
	labelNamespace(t, ns, "meshid-e2e", ns)
	for _, sa := range []string{"web", "db", "evil"} {
		serviceAccount(t, ns, sa)
	}
	dbPod := pod(t, ns, "db-0", "db")
	dbPod.Labels = map[string]string{"app": "db"}
	if _, err := need(t).client.CoreV1().Pods(ns).Update(context.Background(), dbPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dbIn, webOut, evilOut := freeAddr(t), freeAddr(t), freeAddr(t)
	_, dbPort, _ := strings.Cut(dbIn, ":")
	startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+app(t, "db"), "--policy-from-ca", "--pod-name", "db-0", "--default-mode", "deny")
	startProxy(t, ca, ns, "web", "--outbound", webOut+"="+dbIn)
	startProxy(t, ca, ns, "evil", "--outbound", evilOut+"="+dbIn)

	apply := func(yaml string) (string, error) { return kubectl(t, yaml, "apply", "-n", ns, "-f", "-") }
	policy := func(allow string) string {
		return fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: db\nspec:\n  selector:\n    matchLabels: {app: db}\n  port: %s\n  mode: deny\n  allow:\n%s", dbPort, allow)
	}
	// Refused by the webhook, with its message.
	bad := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad\nspec:\n  port: %s\n  mode: all-authenticated\n  allow:\n  - namespace: %s\n", dbPort, ns)
	if out, err := apply(bad); err == nil || !strings.Contains(out, "would do nothing") {
		t.Fatalf("an invalid AuthorizationPolicy was not refused with the webhook's message: %v\n%s", err, out)
	}
	if out, err := apply(policy("  - pattern: 'spiffe://*/ns/a/sa/b'\n")); err == nil || !strings.Contains(out, "must name its trust domain literally") {
		t.Fatalf("a policy with a pattern matching any trust domain was not refused: %v\n%s", err, out)
	}

	allowed := func(out string) bool { _, err := get(fresh, out, "x"); return err == nil }
	expect := func(what string, web, evil bool) {
		t.Helper()
		start := time.Now()
		eventually(t, 5*time.Second, func() error {
			if got := allowed(webOut); got != web {
				return fmt.Errorf("%s: web allowed %v, want %v", what, got, web)
			}
			if got := allowed(evilOut); got != evil {
				return fmt.Errorf("%s: evil allowed %v, want %v", what, got, evil)
			}
			return nil
		})
		t.Logf("%s: in effect after %s", what, time.Since(start).Round(time.Millisecond))
	}
	expect("no policy (default deny)", false, false)
	if out, err := apply(policy(fmt.Sprintf("  - serviceAccount: %s/web\n", ns))); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	expect("web allowed", true, false)
	if out, err := apply(policy(fmt.Sprintf("  - namespace: %s\n", ns))); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	expect("namespace allowed", true, true)
	if out, err := kubectl(t, "", "delete", "-n", ns, "authorizationpolicy", "db"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	expect("policy deleted", false, false)
}
