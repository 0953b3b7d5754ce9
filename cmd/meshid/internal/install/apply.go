package install

import (
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/kube"
)

// apply server-side applies every object, in order, once it knows the
// cluster serves every kind. With a generated anchor it first refuses a
// namespace that already holds meshid.
func apply(ctx context.Context, o *Options, generated bool, objs []*unstructured.Unstructured, out io.Writer) error {
	connect := o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	c, err := connect(o.Kubeconfig, "meshid-install")
	if err != nil {
		return err
	}
	if generated {
		// A second install with a generated anchor would replace the
		// anchor every workload trusts, at once: an outage.
		cm, err := c.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(o.Namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
		if err == nil && cm != nil {
			return fmt.Errorf("install: meshid is already installed in namespace %s (ConfigMap %s exists); a generated anchor would replace the one every workload trusts. Pass the existing material (--anchor-cert ...), or change anchors with meshid rotate-anchor", o.Namespace, manifest.BundleConfigMap)
		}
	}
	// Every kind must be served before anything is applied, so that a
	// missing API (cert-manager's, say) leaves the cluster as it was.
	mappings := make([]*meta.RESTMapping, len(objs))
	for i, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("install: the cluster does not serve %s (%s): %s; nothing was applied", gvk.Kind, gvk.GroupVersion(), notServedHint(gvk.Group))
			}
			return fmt.Errorf("install: %s: %w", gvk.Kind, err)
		}
		mappings[i] = m
	}
	for i, u := range objs {
		gvk, m := u.GroupVersionKind(), mappings[i]
		var ri dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = c.Dynamic.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		data, err := u.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "meshid", Force: ptr.To(true)}); err != nil {
			return fmt.Errorf("install: apply %s %s: %w", gvk.Kind, u.GetName(), err)
		}
		fmt.Fprintf(out, "%s/%s applied\n", strings.ToLower(gvk.Kind), u.GetName())
	}
	return nil
}

// notServedHint says what to do about a kind the cluster does not serve.
func notServedHint(group string) string {
	switch group {
	case "cert-manager.io":
		return "install cert-manager's CRDs first, or install without --cert-manager"
	case "monitoring.coreos.com":
		return "install the Prometheus Operator's CRDs first, or install without --prometheus-operator"
	case "admissionregistration.k8s.io":
		return "meshid's admission policies need Kubernetes 1.30 or later (ValidatingAdmissionPolicy); upgrade the cluster"
	}
	return "install the API that serves it first"
}
