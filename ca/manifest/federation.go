package manifest

import (
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/federation/crd"
)

// federationCRD renders the FederatedTrustDomain CRD.
func federationCRD() (runtime.Object, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(crd.FederatedTrustDomain, &obj); err != nil {
		return nil, fmt.Errorf("manifest: the FederatedTrustDomain CRD: %w", err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// federationRules: the CA watches every FederatedTrustDomain (they are
// cluster-scoped and operators name them) and writes only their status
// (the bundle it fetched); it never changes a spec or creates one.
func federationRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"federatedtrustdomains"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"federatedtrustdomains/status"}, Verbs: []string{"update"}},
	}
}
