package manifest

import (
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
)

// What meshid-ca and meshid-webhook may do, and nothing more. Two limits
// of RBAC shape it (both checked against kube-apiserver by the e2e tests):
//
//   - resourceNames never match a plain create (POST): its URL has no
//     name, so the rule is skipped. A create made by server-side apply
//     (PATCH to the object's URL) is authorized as create of that name, so
//     a named create rule holds for it.
//   - A list or watch matches resourceNames only with a fieldSelector
//     metadata.name=NAME.
//
// Where a name cannot be known in advance (the CA's fleet reports carry
// the pod's name; the webhook's CA Secret is created by code that posts),
// the rule is namespace-wide and a ValidatingAdmissionPolicy bound to that
// service account alone refuses every write but the intended one.

// ServiceAccountUser is the user name a service account authenticates as.
func ServiceAccountUser(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// CAWritesPolicy and WebhookWritesPolicy name the admission policies (and
// their bindings) that narrow what the two service accounts may write.
func CAWritesPolicy(ns string) string      { return CAName + "-" + ns + "-writes" }
func WebhookWritesPolicy(ns string) string { return WebhookName + "-" + ns + "-writes" }

// caRBAC: TokenReviews (cluster-wide, as authentication is); the issuer
// Secret and the bundle ConfigMap watched by name; its fleet reports;
// Events in its namespace.
func caRBAC(o Options, meta func(string) metav1.ObjectMeta) []runtime.Object {
	clusterName := "meshid-ca-" + o.Namespace + "-tokenreview"
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: CAName, Namespace: o.Namespace}}
	clusterMeta := metav1.ObjectMeta{Name: clusterName, Labels: meta("").Labels}
	objs := []runtime.Object{
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: clusterMeta, Rules: caClusterRules(o)},
		&rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: clusterMeta,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterName}, Subjects: subject},
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(CAName),
			Rules: append([]rbacv1.PolicyRule{
				// Watched by name (a list and watch with a fieldSelector).
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{IssuerSecret}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{BundleConfigMap}, Verbs: []string{"list", "watch"}},
				// Fleet reports, meshid-fleet-POD: the names are not known
				// in advance, so the rule is namespace-wide; the policy
				// below refuses writes to any other ConfigMap.
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create", "get", "update"}},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			}, caJWTRules(o)...)},
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(CAName),
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: CAName}, Subjects: subject},
	}
	fleetReport := fmt.Sprintf("object.metadata.name.startsWith(%q) && %s", fleet.ConfigMapPrefix, labelIs("object", fleet.Label, "true"))
	if o.External != nil {
		objs = append(objs, externalPolicy(o, meta("").Labels)...)
	}
	return append(objs, writesPolicy(CAWritesPolicy(o.Namespace), meta("").Labels, ServiceAccountUser(o.Namespace, CAName),
		[]string{"configmaps"},
		admissionregistrationv1.Validation{Expression: fleetReport,
			Message: fmt.Sprintf("meshid-ca may write only its fleet reports: ConfigMaps named %sREPLICA labelled %s=true", fleet.ConfigMapPrefix, fleet.Label)},
	)...)
}

// caJWTRules: with JWT-SVIDs, the key Secret by name: read, created empty
// by server-side apply (a named create; a replica that applies after
// another created it makes a named patch), filled by conditional updates.
// The CA never lists or watches it, and never touches another Secret.
func caJWTRules(o Options) []rbacv1.PolicyRule {
	if o.JWT == nil {
		return nil
	}
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{JWTKeySecret}, Verbs: []string{"get", "create", "patch", "update"}}}
}

// caClusterRules: TokenReviews always; with the webhook (whose injected
// pods are transparent), watching the AuthorizationPolicies, reading the
// pod a proxy names, and watching pods, Services and EndpointSlices for
// discovery (--discovery: who is behind an address); with External, reading
// ExternalWorkloads and writing their status (external.go); with federation,
// the FederatedTrustDomains and their status (federation.go).
func caClusterRules(o Options) []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}}}
	if o.Webhook != nil {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{"meshid.dev"}, Resources: []string{"authorizationpolicies"}, Verbs: []string{"list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}})
	}
	if o.External != nil {
		rules = append(rules, externalRules()...)
	}
	if o.Federation {
		rules = append(rules, federationRules()...)
	}
	return rules
}

// webhookRBAC: reading namespaces; the copies of the trust bundle, by
// name, in every namespace but the control plane's; listing
// AuthorizationPolicies to validate one; the caBundle of its own two
// webhook configurations; and, unless cert-manager serves its certificate,
// its webhook CA Secret.
func webhookRBAC(o Options, meta func(string) metav1.ObjectMeta, labels map[string]string) []runtime.Object {
	clusterMeta := metav1.ObjectMeta{Name: "meshid-webhook-" + o.Namespace, Labels: labels}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: WebhookName, Namespace: o.Namespace}}
	objs := []runtime.Object{
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: clusterMeta, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list"}},
			// The source (read in the control plane's namespace) and its
			// copies, by name: listed with a fieldSelector, created by
			// server-side apply (a named create), updated in place. The
			// policy below keeps writes out of the control plane's
			// namespace and off ConfigMaps that are not copies.
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{BundleConfigMap}, Verbs: []string{"get", "list", "create", "patch", "update"}},
			{APIGroups: []string{"meshid.dev"}, Resources: []string{"authorizationpolicies"}, Verbs: []string{"list"}},
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{InjectorConfig(o.Namespace)}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"}, ResourceNames: []string{ValidationConfig(o.Namespace)}, Verbs: []string{"get", "update"}},
		}},
		&rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: clusterMeta,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterMeta.Name}, Subjects: subject},
	}
	isCopy := func(obj string) string { return labelIs(obj, bundle.CopyLabel, "copy") }
	resources := []string{"configmaps"}
	validations := []admissionregistrationv1.Validation{
		{Expression: fmt.Sprintf(`request.resource.resource != "configmaps" || request.namespace != %q`, o.Namespace),
			Message: fmt.Sprintf("meshid-webhook never writes ConfigMaps in %s: the trust bundle there is the source every workload trusts", o.Namespace)},
		{Expression: fmt.Sprintf(`request.resource.resource != "configmaps" || (object.metadata.name == %q && %s && (request.operation != "UPDATE" || %s))`, BundleConfigMap, isCopy("object"), isCopy("oldObject")),
			Message: fmt.Sprintf("meshid-webhook may write only its copies of the trust bundle: ConfigMaps named %s labelled %s=copy", BundleConfigMap, bundle.CopyLabel)},
	}
	if o.CertManager == nil {
		// The webhook CA Secret: created on first start by a plain create
		// (so the rule cannot name it), read by name afterwards. With
		// cert-manager the webhook only reads its mounted certificate.
		wm := meta(WebhookName)
		wm.Labels = labels
		objs = append(objs,
			&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: wm, Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{WebhookCASecret}, Verbs: []string{"get"}},
			}},
			&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: wm,
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: WebhookName}, Subjects: subject})
		resources = append(resources, "secrets")
		validations = append(validations, admissionregistrationv1.Validation{
			Expression: fmt.Sprintf(`request.resource.resource != "secrets" || (object.metadata.name == %q && object.type == "kubernetes.io/tls")`, WebhookCASecret),
			Message:    fmt.Sprintf("meshid-webhook may create only its CA Secret %s, of type kubernetes.io/tls", WebhookCASecret),
		})
	}
	return append(objs, writesPolicy(WebhookWritesPolicy(o.Namespace), labels, ServiceAccountUser(o.Namespace, WebhookName), resources, validations...)...)
}

// writesPolicy renders a ValidatingAdmissionPolicy, and its binding, that
// applies to creates and updates of resources by user alone and denies
// those that fail a validation. It fails closed.
func writesPolicy(name string, labels map[string]string, user string, resources []string, validations ...admissionregistrationv1.Validation) []runtime.Object {
	fail := admissionregistrationv1.Fail
	for i := range validations {
		validations[i].Reason = ptr.To(metav1.StatusReasonForbidden)
	}
	objMeta := metav1.ObjectMeta{Name: name, Labels: labels}
	return []runtime.Object{
		&admissionregistrationv1.ValidatingAdmissionPolicy{
			TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"), ObjectMeta: objMeta,
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: &fail,
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: resources},
					},
				}}},
				MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "service-account", Expression: fmt.Sprintf("request.userInfo.username == %q", user)}},
				Validations:     validations,
			},
		},
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"), ObjectMeta: objMeta,
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName: name, ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			},
		},
	}
}

// labelIs is a CEL expression: obj carries label key=value.
func labelIs(obj, key, value string) string {
	return fmt.Sprintf("%s.metadata.?labels[?%q].orValue(\"\") == %q", obj, key, value)
}
