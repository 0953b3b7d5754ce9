package install

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// preflight refuses, before anything is generated or applied, what would
// make --apply fail or swap the trust anchor at once: a generated anchor
// over a namespace that already holds meshid, the operator's anchors over
// an install that trusts others (bundlePEM is what install would write),
// and a kind of objs the cluster does not serve.
func preflight(ctx context.Context, c *kube.Clients, o *Options, generate bool, bundlePEM []byte, objs []*unstructured.Unstructured) error {
	cm, err := c.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(o.Namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("install: read ConfigMap %s/%s, to know whether meshid is installed there: %w; nothing was generated or applied", o.Namespace, manifest.BundleConfigMap, err)
	case generate:
		// A second install with a generated anchor would replace the
		// anchor every workload trusts, at once: an outage.
		return fmt.Errorf("install: meshid is already installed in namespace %s (ConfigMap %s exists); a generated anchor would replace the one every workload trusts. Pass the existing material (--anchor-cert ...), or change anchors with meshid rotate-anchor; nothing was generated or applied", o.Namespace, manifest.BundleConfigMap)
	default:
		pem, _, _ := unstructured.NestedString(cm.Object, "data", bundle.Key)
		if err := sameAnchors(o, []byte(pem), bundlePEM); err != nil {
			return err
		}
	}
	_, err = mappings(c, objs)
	return err
}

// sameAnchors refuses to write want over the installed bundle have unless
// both hold the same anchors: anything else would change, at once, what
// every workload trusts (an outage), which only rotate-anchor does safely.
func sameAnchors(o *Options, have, want []byte) error {
	where := fmt.Sprintf("the trust bundle installed in namespace %s (ConfigMap %s)", o.Namespace, manifest.BundleConfigMap)
	wb, err := bundle.Parse(want)
	if err != nil {
		return fmt.Errorf("install: --anchor-cert %s: %w", o.AnchorCert, err)
	}
	hb, err := bundle.Parse(have)
	if err != nil {
		return fmt.Errorf("install: %s is not a valid bundle (%v); install will not write over it. Look at it with kubectl -n %s get configmap %s -o yaml, and meshid check -n %s; nothing was applied", where, err, o.Namespace, manifest.BundleConfigMap, o.Namespace)
	}
	if len(hb.Anchors()) == len(wb.Anchors()) && all(wb.Anchors(), hb.Contains) {
		return nil
	}
	if all(wb.Anchors(), hb.Contains) {
		return fmt.Errorf("install: %s holds more anchors (%s) than --anchor-cert %s (%s): an anchor rotation is under way, or stopped. See meshid rotate-anchor status -n %s, and run install with the anchors installed; nothing was applied", where, fingerprints(hb), o.AnchorCert, fingerprints(wb), o.Namespace)
	}
	rotate := "meshid rotate-anchor start --new-anchor-cert " + o.AnchorCert + " --new-anchor-key ANCHOR.key"
	if o.CertManager {
		rotate = "meshid rotate-anchor start --cert-manager --new-anchor-cert " + o.AnchorCert + " --new-anchor-key " + o.AnchorKey
	}
	return fmt.Errorf("install: %s holds other anchors (%s) than --anchor-cert %s (%s); applying would replace the anchor every workload trusts at once. To change the anchor, rotate with no downtime: %s -n %s; to re-run install, pass the anchor installed. Nothing was applied", where, fingerprints(hb), o.AnchorCert, fingerprints(wb), rotate, o.Namespace)
}

func all(certs []*x509.Certificate, in func(*x509.Certificate) bool) bool {
	for _, c := range certs {
		if !in(c) {
			return false
		}
	}
	return true
}

// fingerprints names b's anchors: subject and SHA-256 fingerprint.
func fingerprints(b *bundle.Bundle) string {
	var fs []string
	for _, a := range b.Anchors() {
		fs = append(fs, fmt.Sprintf("%q SHA-256 %s", a.Subject.CommonName, bundle.Fingerprint(a)))
	}
	return strings.Join(fs, ", ")
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
