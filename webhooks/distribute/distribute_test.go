package distribute_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/webhooks/distribute"
)

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	client := fake.NewClientset(
		ns("meshid", nil), ns("shop", map[string]string{"meshid.dev/inject": "enabled"}), ns("other", nil), ns("mine", nil),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "meshid-trust-bundle", Namespace: "meshid"}, Data: map[string]string{"ca-bundle.crt": "A", "reissue-window": "30s"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "meshid-trust-bundle", Namespace: "mine"}, Data: map[string]string{"ca-bundle.crt": "user's own"}},
	)
	d, err := distribute.New(distribute.Config{Client: client, Namespace: "meshid", Name: "meshid-trust-bundle", NamespaceLabel: "meshid.dev/inject=enabled"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	get := func(ns string) *corev1.ConfigMap {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return cm
	}
	if cm := get("shop"); cm == nil || cm.Data["ca-bundle.crt"] != "A" || len(cm.Data) != 1 || cm.Labels[bundle.CopyLabel] != "copy" {
		t.Fatalf("copy in the labelled namespace: %+v", cm)
	}
	if get("other") != nil {
		t.Fatal("copied into a namespace that did not opt in")
	}
	if err := d.Ensure(ctx, "other"); err != nil || get("other") == nil {
		t.Fatalf("Ensure did not copy: %v", err)
	}
	if err := d.Ensure(ctx, "mine"); err == nil || get("mine").Data["ca-bundle.crt"] != "user's own" {
		t.Fatal("a ConfigMap that is not a meshid copy was overwritten")
	}
	src := get("meshid")
	src.Data["ca-bundle.crt"] = "B"
	if _, err := client.CoreV1().ConfigMaps("meshid").Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"shop", "other"} {
		if get(n).Data["ca-bundle.crt"] != "B" {
			t.Fatalf("the copy in %s did not follow the source", n)
		}
	}
}
