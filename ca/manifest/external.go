package manifest

import (
	"fmt"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/workload/crd"
)

// External renders mesh expansion: the ExternalWorkload CRD, and meshid-ca
// serving JoinExternal and RenewExternal with the rights that needs.
type External struct {
	// LeafTTL is the lifetime of an external workload's certificate; 0
	// leaves meshid-ca's default (--external-leaf-ttl).
	LeafTTL time.Duration
}

// externalObjects renders the ExternalWorkload CRD.
func externalObjects() ([]runtime.Object, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(crd.ExternalWorkload, &obj); err != nil {
		return nil, fmt.Errorf("manifest: the ExternalWorkload CRD: %w", err)
	}
	return []runtime.Object{&unstructured.Unstructured{Object: obj}}, nil
}

// externalRules: meshid-ca reads an ExternalWorkload by name at every join
// and renewal (a get, never a cached list: a deleted object stops renewals
// at once) and records the certificate it issued in its status. It never
// creates, changes or deletes the object itself, and reads no Secret: the
// join token is kept as a hash in the status.
func externalRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"externalworkloads"}, Verbs: []string{"get"}},
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"externalworkloads/status"}, Verbs: []string{"update"}},
	}
}

// externalArgs are meshid-ca's flags for o.External.
func externalArgs(e *External) []string {
	args := []string{"--external-workloads"}
	if e.LeafTTL > 0 {
		args = append(args, "--external-leaf-ttl="+e.LeafTTL.String())
	}
	return args
}
