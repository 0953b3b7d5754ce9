package manifest_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshid/meshid/ca/manifest"
)

// TestExternalWorkloads: with External the CRD is rendered, meshid-ca runs
// with --external-workloads and its TTL, and may get ExternalWorkloads and
// update their status, list Services and write EndpointSlices, its
// EndpointSlice writes narrowed by an admission policy; without it, none
// of that.
func TestExternalWorkloads(t *testing.T) {
	base := manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")}
	for _, ext := range []*manifest.External{nil, {LeafTTL: 30 * time.Minute}} {
		o := base
		o.External = ext
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var crd, narrowed bool
		var rules []rbacv1.PolicyRule
		for _, obj := range objs {
			switch x := obj.(type) {
			case *unstructured.Unstructured:
				if x.GetKind() == "CustomResourceDefinition" && x.GetName() == "externalworkloads.meshid.dev" {
					crd = true
				}
			case *rbacv1.ClusterRole:
				rules = append(rules, x.Rules...)
			case *admissionregistrationv1.ValidatingAdmissionPolicy:
				if x.Name == manifest.CAExternalWritesPolicy("mesh") {
					rule := x.Spec.MatchConstraints.ResourceRules[0].Rule
					narrowed = slices.Equal(rule.APIGroups, []string{"discovery.k8s.io"}) && slices.Equal(rule.Resources, []string{"endpointslices"}) &&
						strings.Contains(x.Spec.Validations[0].Expression, "externalworkloads.meshid.dev")
				}
			}
		}
		var got []string
		for _, r := range rules {
			for _, res := range r.Resources {
				if res == "externalworkloads" || res == "externalworkloads/status" || res == "endpointslices" && slices.Contains(r.Verbs, "create") {
					got = append(got, res+":"+strings.Join(r.Verbs, ","))
				}
			}
		}
		args := manifest.Args(o)
		if ext == nil {
			if crd || narrowed || len(got) > 0 || slices.Contains(args, "--external-workloads") {
				t.Errorf("without External: crd %v, policy %v, rules %v, args %v", crd, narrowed, got, args)
			}
			continue
		}
		want := []string{"externalworkloads:get,list,watch", "externalworkloads/status:update", "endpointslices:list,create,update,delete"}
		if !crd || !narrowed || !slices.Equal(got, want) || !slices.Contains(args, "--external-workloads") || !slices.Contains(args, "--external-leaf-ttl=30m0s") {
			t.Errorf("with External: crd %v, rules %v (want %v), args %v", crd, got, want, args)
		}
	}
}
