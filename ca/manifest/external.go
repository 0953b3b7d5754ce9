package manifest

import (
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/workload/crd"
	"github.com/meshid/meshid/ca/external"
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
//
// It publishes their addresses as EndpointSlices of the Services that
// select them: it lists and watches ExternalWorkloads and Services, and
// writes EndpointSlices in every namespace (their names follow the
// Services'); the admission policy of externalPolicy refuses its writes
// of any slice not labelled as its own.
func externalRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"externalworkloads"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"meshid.dev"}, Resources: []string{"externalworkloads/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "create", "update", "delete"}},
	}
}

// CAExternalWritesPolicy names the admission policy that narrows the CA's
// EndpointSlice writes.
func CAExternalWritesPolicy(ns string) string { return CAName + "-" + ns + "-endpointslices" }

// externalPolicy refuses the CA's creates and updates of EndpointSlices
// that are not its ExternalWorkloads' (managed-by externalworkloads.meshid.dev).
func externalPolicy(o Options, labels map[string]string) []runtime.Object {
	objs := writesPolicy(CAExternalWritesPolicy(o.Namespace), labels, ServiceAccountUser(o.Namespace, CAName), []string{"endpointslices"},
		admissionregistrationv1.Validation{
			Expression: labelIs("object", discoveryv1.LabelManagedBy, external.ManagedBy) + " && (request.operation != \"UPDATE\" || " + labelIs("oldObject", discoveryv1.LabelManagedBy, external.ManagedBy) + ")",
			Message:    "meshid-ca may write only the EndpointSlices of ExternalWorkloads: labelled " + discoveryv1.LabelManagedBy + "=" + external.ManagedBy,
		})
	// writesPolicy matches the core group; EndpointSlices are discovery.k8s.io/v1.
	rule := &objs[0].(*admissionregistrationv1.ValidatingAdmissionPolicy).Spec.MatchConstraints.ResourceRules[0].Rule
	rule.APIGroups, rule.APIVersions = []string{"discovery.k8s.io"}, []string{"v1"}
	return objs
}

// externalArgs are meshid-ca's flags for o.External.
func externalArgs(e *External) []string {
	args := []string{"--external-workloads"}
	if e.LeafTTL > 0 {
		args = append(args, "--external-leaf-ttl="+e.LeafTTL.String())
	}
	return args
}
