package manifest_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshid/meshid/ca/manifest"
)

// TestExternalWorkloads: with External the CRD is rendered, meshid-ca runs
// with --external-workloads and its TTL, and may get ExternalWorkloads and
// update their status, nothing more; without it, none of that.
func TestExternalWorkloads(t *testing.T) {
	base := manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")}
	for _, ext := range []*manifest.External{nil, {LeafTTL: 30 * time.Minute}} {
		o := base
		o.External = ext
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var crd bool
		var rules []rbacv1.PolicyRule
		for _, obj := range objs {
			switch x := obj.(type) {
			case *unstructured.Unstructured:
				if x.GetKind() == "CustomResourceDefinition" && x.GetName() == "externalworkloads.meshid.dev" {
					crd = true
				}
			case *rbacv1.ClusterRole:
				rules = append(rules, x.Rules...)
			}
		}
		var got []string
		for _, r := range rules {
			for _, res := range r.Resources {
				if slices.Contains(r.APIGroups, "meshid.dev") && (res == "externalworkloads" || res == "externalworkloads/status") {
					got = append(got, res+":"+strings.Join(r.Verbs, ","))
				}
			}
		}
		args := manifest.Args(o)
		if ext == nil {
			if crd || len(got) > 0 || slices.Contains(args, "--external-workloads") {
				t.Errorf("without External: crd %v, rules %v, args %v", crd, got, args)
			}
			continue
		}
		want := []string{"externalworkloads:get", "externalworkloads/status:update"}
		if !crd || !slices.Equal(got, want) || !slices.Contains(args, "--external-workloads") || !slices.Contains(args, "--external-leaf-ttl=30m0s") {
			t.Errorf("with External: crd %v, rules %v (want %v), args %v", crd, got, want, args)
		}
	}
}
