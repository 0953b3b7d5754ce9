package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/webhooks/inject"
)

// saClient is a clientset holding a real token of ns/sa.
func saClient(t *testing.T, ns, sa string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", saKubeconfig(t, ns, sa))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renderedKinds keeps the documents of a rendered manifest whose kind is
// one of kinds.
func renderedKinds(t *testing.T, rendered string, kinds ...string) string {
	t.Helper()
	var keep []string
	for _, doc := range strings.Split(rendered, "\n---\n") {
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(kinds, head.Kind) {
			keep = append(keep, doc)
		}
	}
	return strings.Join(keep, "\n---\n")
}

// TestInstalledRBAC: meshid-ca and meshid-webhook, run with real tokens of
// the service accounts `meshid install` renders, under its RBAC and its
// admission policies, still do their jobs, and each is refused every other
// write tried here: by RBAC, or by the policy where RBAC cannot name the
// object.
//
// The CA watches its issuer and bundle by name and creates, then updates,
// its fleet report. The webhook creates its CA Secret, syncs the caBundle
// of both its webhook configurations, validates an AuthorizationPolicy,
// copies the trust bundle into a new namespace for an injected pod and
// updates the copy when the source changes.
//
// Not parallel: its webhook keeps every bundle copy in the cluster, as the
// one webhook of a cluster does, and would fight TestInjector's.
func TestInstalledRBAC(t *testing.T) {
	e := need(t)
	ctx := context.Background()
	ns := "meshid-rbac"
	dir := t.TempDir()
	anchor := newAnchor(t, "rbac anchor")
	iss := newIssuer(t, anchor, "rbac issuer")
	key, _ := iss.KeyPEM()
	for name, data := range map[string][]byte{"anchor.crt": anchor.CertPEM(), "issuer.crt": iss.CertPEM(), "issuer.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rendered, code := meshid(t, "", "install", "-n", ns, "--image", "example.invalid/meshid-ca:test",
		"--anchor-cert", filepath.Join(dir, "anchor.crt"), "--issuer-cert", filepath.Join(dir, "issuer.crt"), "--issuer-key", filepath.Join(dir, "issuer.key"))
	if code != 0 {
		t.Fatalf("install: %s", rendered)
	}
	// Everything but the workloads (the test runs them) and the webhook
	// configurations (they would send every test's pods to a webhook that
	// is not running; the test makes its own, under the rendered names).
	objects := renderedKinds(t, rendered, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "Secret", "CustomResourceDefinition")
	if out, err := kubectl(t, objects, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/authorizationpolicies.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	caPolicy, webhookPolicy := manifest.CAWritesPolicy(ns), manifest.WebhookWritesPolicy(ns)
	caSA, webhookSA := saClient(t, ns, manifest.CAName), saClient(t, ns, manifest.WebhookName)
	dryRun := []string{metav1.DryRunAll}
	byPolicy := func(err error, policy string) bool {
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), policy)
	}
	byRBAC := func(err error) bool { return apierrors.IsForbidden(err) && strings.Contains(err.Error(), " cannot ") }

	existing := func(ns, name string) *corev1.ConfigMap {
		t.Helper()
		cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data = map[string]string{bundle.Key: "tampered"}
		return cm
	}
	asCopy := func(cm *corev1.ConfigMap) *corev1.ConfigMap {
		cm.Labels = map[string]string{bundle.CopyLabel: "copy"}
		return cm
	}
	update := func(c kubernetes.Interface, cm *corev1.ConfigMap) error {
		_, err := c.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{DryRun: dryRun})
		return err
	}
	create := func(c kubernetes.Interface, cm *corev1.ConfigMap) error {
		_, err := c.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{DryRun: dryRun})
		return err
	}
	apply := func(c kubernetes.Interface, ns, name string, labels map[string]string) error {
		_, err := c.CoreV1().ConfigMaps(ns).Apply(ctx, corev1ac.ConfigMap(name, ns).WithLabels(labels).WithData(map[string]string{bundle.Key: "x"}),
			metav1.ApplyOptions{FieldManager: "e2e", DryRun: dryRun})
		return err
	}
	secret := func(c kubernetes.Interface, ns, name string, typ corev1.SecretType) error {
		_, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{corev1.ServiceAccountNameKey: manifest.CAName}}, Type: typ,
			Data: map[string][]byte{corev1.TLSCertKey: iss.CertPEM(), corev1.TLSPrivateKeyKey: key},
		}, metav1.CreateOptions{DryRun: dryRun})
		return err
	}
	// The policies take effect once the API server has loaded them.
	eventually(t, 30*time.Second, func() error {
		errCA := update(caSA, existing(ns, manifest.BundleConfigMap))
		errWH := update(webhookSA, asCopy(existing(ns, manifest.BundleConfigMap)))
		if !byPolicy(errCA, caPolicy) || !byPolicy(errWH, webhookPolicy) {
			return fmt.Errorf("the admission policies are not in force yet (CA: %v; webhook: %v)", errCA, errWH)
		}
		return nil
	})

	// meshid-ca as its service account, publishing its fleet report.
	addr, admin := freeAddr(t), freeAddr(t)
	caArgs := append(deploymentArgs(t, rendered), "--kubeconfig", saKubeconfig(t, ns, manifest.CAName),
		"--listen", addr, "--admin-listen", admin, "--replica", "rbac-0", "--fleet-report-interval", "200ms")
	ca := startProcess(t, "meshid-ca", admin, caArgs...)
	report := fleet.ConfigMapPrefix + "rbac-0"
	var firstVersion string
	eventually(t, 30*time.Second, func() error {
		cm, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, report, metav1.GetOptions{})
		switch {
		case err != nil:
			return fmt.Errorf("no fleet report yet: %v", err)
		case cm.Labels[fleet.Label] != "true":
			t.Fatalf("fleet report without its label: %v", cm.Labels)
		case firstVersion == "":
			firstVersion = cm.ResourceVersion
			return fmt.Errorf("created; not updated yet")
		case cm.ResourceVersion == firstVersion:
			return fmt.Errorf("fleet report not updated yet")
		}
		return nil
	})
	if logs := ca.logs(t); strings.Contains(logs, "forbidden") {
		t.Fatalf("meshid-ca was refused something:\n%s", logs)
	}

	// meshid-webhook as its service account, behind webhook configurations
	// under the rendered names that only this test's namespaces use.
	whAddr := freeAddr(t)
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"meshid-e2e": ns}}
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	injectURL, validateURL := "https://"+whAddr+"/inject", "https://"+whAddr+"/validate"
	if _, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: manifest.InjectorConfig(ns)},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &injectURL},
			Rules:             []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: selector, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), manifest.InjectorConfig(ns), metav1.DeleteOptions{})
	})
	if _, err := e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: manifest.ValidationConfig(ns)},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "validate.policy.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &validateURL},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"meshid.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"authorizationpolicies"}},
			}},
			NamespaceSelector: selector, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), manifest.ValidationConfig(ns), metav1.DeleteOptions{})
	})
	// runWebhook passes the admin kubeconfig first; the later flag wins.
	wh := runWebhook(t, func() error {
		mwc, err := e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, manifest.InjectorConfig(ns), metav1.GetOptions{})
		if err != nil || len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("the injector's caBundle is not synced yet (%v)", err)
		}
		vwc, err := e.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, manifest.ValidationConfig(ns), metav1.GetOptions{})
		if err != nil || len(vwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("the validation caBundle is not synced yet (%v)", err)
		}
		return nil
	}, "--kubeconfig", saKubeconfig(t, ns, manifest.WebhookName), "-n", ns, "--listen", whAddr, "--ip", "127.0.0.1",
		"--mutating-webhook", manifest.InjectorConfig(ns), "--validating-webhook", manifest.ValidationConfig(ns), "--proxy-image", "ghcr.io/meshid/meshid-proxy:e2e")
	if s, err := e.client.CoreV1().Secrets(ns).Get(ctx, manifest.WebhookCASecret, metav1.GetOptions{}); err != nil || s.Type != corev1.SecretTypeTLS {
		t.Fatalf("the webhook did not create its CA Secret: %v", err)
	}

	app := namespace(t, "rbacapp")
	n, err := e.client.CoreV1().Namespaces().Get(ctx, app, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["meshid-e2e"], n.Labels[inject.NamespaceLabel] = ns, "enabled"
	if _, err := e.client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	serviceAccount(t, app, "web")
	created, err := e.client.CoreV1().Pods(app).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil || created.Annotations["meshid.dev/injected"] == "" {
		t.Fatalf("pod not injected: %v", err)
	}
	copyOf := func() (*corev1.ConfigMap, error) {
		return e.client.CoreV1().ConfigMaps(app).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	}
	if cm, err := copyOf(); err != nil || cm.Data[bundle.Key] != string(anchor.CertPEM()) || cm.Labels[bundle.CopyLabel] != "copy" {
		t.Fatalf("no trust bundle copy in %s for its injected pod: %v", app, err)
	}
	if out, err := kubectl(t, fmt.Sprintf(`{"apiVersion": "meshid.dev/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": "web", "namespace": %q},
		"spec": {"port": 8443, "mode": "deny", "allow": [{"serviceAccount": %q}]}}`, app, app+"/client"), "create", "-f", "-"); err != nil {
		t.Fatalf("a valid AuthorizationPolicy, validated by the webhook as its service account: %v\n%s", err, out)
	}
	src, err := e.client.CoreV1().ConfigMaps(ns).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src.Data[bundle.Key] = string(anchor.CertPEM()) + string(newAnchor(t, "next rbac anchor").CertPEM())
	if _, err := e.client.CoreV1().ConfigMaps(ns).Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if cm, err := copyOf(); err != nil || cm.Data[bundle.Key] != src.Data[bundle.Key] {
			return fmt.Errorf("the copy in %s does not follow the source yet (%v)", app, err)
		}
		return nil
	})
	if logs := wh.logs(t); strings.Contains(logs, "forbidden") {
		t.Fatalf("meshid-webhook was refused something:\n%s", logs)
	}

	// Everything else is refused. Writes are dry runs: a refusal that
	// failed would change nothing.
	other, fresh := namespace(t, "rbacother"), namespace(t, "rbacfresh")
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: other}, Data: map[string]string{"k": "v"}},
		// A user's own ConfigMap that happens to carry the bundle's name.
		{ObjectMeta: metav1.ObjectMeta{Name: manifest.BundleConfigMap, Namespace: other}, Data: map[string]string{bundle.Key: "the user's"}},
	} {
		if _, err := e.client.CoreV1().ConfigMaps(other).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	copyMeta := map[string]string{bundle.CopyLabel: "copy"}
	refusals := []struct {
		name   string
		do     func() error
		policy string // "" when RBAC refuses
	}{
		{"webhook: update a kube-system ConfigMap", func() error {
			return update(webhookSA, existing("kube-system", "extension-apiserver-authentication"))
		}, ""},
		{"webhook: update another ConfigMap in a workload namespace", func() error { return update(webhookSA, existing(other, "app-config")) }, ""},
		{"webhook: create any ConfigMap by POST, even one named as the bundle", func() error {
			return create(webhookSA, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: manifest.BundleConfigMap, Namespace: fresh}})
		}, ""},
		{"webhook: apply a ConfigMap of another name", func() error { return apply(webhookSA, other, "app-config", copyMeta) }, ""},
		{"webhook: update the source bundle in the control plane's namespace", func() error {
			return update(webhookSA, asCopy(existing(ns, manifest.BundleConfigMap)))
		}, webhookPolicy},
		{"webhook: take over a user's ConfigMap named as the bundle", func() error {
			return update(webhookSA, asCopy(existing(other, manifest.BundleConfigMap)))
		}, webhookPolicy},
		{"webhook: make a bundle copy that is not labelled as one", func() error { return apply(webhookSA, fresh, manifest.BundleConfigMap, nil) }, webhookPolicy},
		{"webhook: strip the copy label", func() error {
			cm := existing(app, manifest.BundleConfigMap)
			cm.Labels = nil
			return update(webhookSA, cm)
		}, webhookPolicy},
		{"webhook: create a Secret of another name", func() error { return secret(webhookSA, ns, "meshid-sneaky", corev1.SecretTypeTLS) }, webhookPolicy},
		{"webhook: create a token Secret for meshid-ca under its CA Secret's name", func() error {
			return secret(webhookSA, ns, manifest.WebhookCASecret, corev1.SecretTypeServiceAccountToken)
		}, webhookPolicy},
		{"webhook: create a Secret in another namespace", func() error { return secret(webhookSA, other, manifest.WebhookCASecret, corev1.SecretTypeTLS) }, ""},
		{"webhook: read the issuer", func() error {
			_, err := webhookSA.CoreV1().Secrets(ns).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
			return err
		}, ""},
		{"ca: update its trust bundle", func() error { return update(caSA, existing(ns, manifest.BundleConfigMap)) }, caPolicy},
		{"ca: update the alert rules", func() error { return update(caSA, existing(ns, manifest.AlertsConfigMap)) }, caPolicy},
		{"ca: create the rotation state", func() error {
			return create(caSA, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "meshid-rotation", Namespace: ns}})
		}, caPolicy},
		{"ca: create a fleet report without the fleet label", func() error {
			return create(caSA, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fleet.ConfigMapPrefix + "forged", Namespace: ns}})
		}, caPolicy},
		{"ca: update a ConfigMap in another namespace", func() error { return update(caSA, existing(other, "app-config")) }, ""},
		{"ca: read another Secret", func() error {
			_, err := caSA.CoreV1().Secrets(ns).Get(ctx, manifest.WebhookCASecret, metav1.GetOptions{})
			return err
		}, ""},
		{"ca: list Secrets", func() error {
			_, err := caSA.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}, ""},
	}
	for _, r := range refusals {
		err := r.do()
		switch {
		case r.policy == "" && !byRBAC(err):
			t.Errorf("%s: %v; want RBAC to refuse it", r.name, err)
		case r.policy != "" && !byPolicy(err, r.policy):
			t.Errorf("%s: %v; want policy %s to refuse it", r.name, err, r.policy)
		}
	}

	// Why the policies are needed: RBAC answers a question about a named
	// create with yes, but a real create never carries the name, so such
	// a rule grants nothing to a POST (above) and only a named apply gets
	// through (the webhook's copies).
	review, err := e.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: manifest.ServiceAccountUser(ns, manifest.WebhookName), Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: fresh, Verb: "create", Resource: "configmaps", Name: manifest.BundleConfigMap},
	}}, metav1.CreateOptions{})
	if err != nil || !review.Status.Allowed {
		t.Fatalf("SubjectAccessReview of a named create: %v %+v; RBAC should say yes", err, review.Status)
	}
}
