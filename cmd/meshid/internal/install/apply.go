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
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// preflight refuses, before anything is generated or applied, what would
// make --apply fail: a generated anchor over a namespace that already holds
// meshid, and a kind of objs the cluster does not serve.
func preflight(ctx context.Context, c *kube.Clients, o *Options, generate bool, objs []*unstructured.Unstructured) error {
	if generate {
		// A second install with a generated anchor would replace the
		// anchor every workload trusts, at once: an outage.
		cm, err := c.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(o.Namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
		if err == nil && cm != nil {
			return fmt.Errorf("install: meshid is already installed in namespace %s (ConfigMap %s exists); a generated anchor would replace the one every workload trusts. Pass the existing material (--anchor-cert ...), or change anchors with meshid rotate-anchor; nothing was generated or applied", o.Namespace, manifest.BundleConfigMap)
		}
	}
	_, err := mappings(c, objs)
	return err
}

// mappings finds the resource of every object; a kind the cluster does not
// serve is refused, so that a missing API (cert-manager's, say) leaves the
// cluster as it was.
func mappings(c *kube.Clients, objs []*unstructured.Unstructured) ([]*meta.RESTMapping, error) {
	ms := make([]*meta.RESTMapping, len(objs))
	for i, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if meta.IsNoMatchError(err) {
				return nil, fmt.Errorf("install: the cluster does not serve %s (%s): %s; nothing was generated or applied", gvk.Kind, gvk.GroupVersion(), notServedHint(gvk.Group))
			}
			return nil, fmt.Errorf("install: %s: %w", gvk.Kind, err)
		}
		ms[i] = m
	}
	return ms, nil
}

// Applied is the line -o json prints for each object applied.
type Applied struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// apply server-side applies every object, in order, and prints a line for
// each (a JSON object per line with -o json).
func apply(ctx context.Context, c *kube.Clients, o *Options, objs []*unstructured.Unstructured, out io.Writer) error {
	ms, err := mappings(c, objs)
	if err != nil {
		return err
	}
	style := cli.StyleFor(out)
	for i, u := range objs {
		gvk, m := u.GroupVersionKind(), ms[i]
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
		if o.Output == "json" {
			if err := output.JSONLine(out, Applied{Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(out, style.Good(fmt.Sprintf("%s/%s applied", strings.ToLower(gvk.Kind), u.GetName())))
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
