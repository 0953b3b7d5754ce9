package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// AuthorizationPolicy says which peers may connect to one inbound port of
// the pods it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=authz
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.port`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec is the policy of one port.
type AuthorizationPolicySpec struct {
	// Selector selects the pods, by label, whose proxies apply the policy;
	// empty selects every pod of the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// Port is the inbound listen port of the proxy the policy applies to.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// Mode is what the port accepts before the allow rules: deny (only
	// what a rule names), all-authenticated, cluster-authenticated (our
	// trust domain), all-unauthenticated (plain TCP too).
	// +kubebuilder:validation:Enum=deny;all-authenticated;cluster-authenticated;all-unauthenticated
	// +kubebuilder:default=deny
	// +optional
	Mode string `json:"mode,omitempty"`

	// Allow lists the identities allowed in mode deny or
	// cluster-authenticated.
	// +optional
	// +listType=atomic
	Allow []Rule `json:"allow,omitempty"`
}

// Rule allows peers; exactly one field is set.
type Rule struct {
	// ID is one SPIFFE ID, of our trust domain or of a federated one.
	// +optional
	ID string `json:"id,omitempty"`
	// ServiceAccount is NAMESPACE/NAME.
	// +optional
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Namespace allows every service account in it.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Pattern is a SPIFFE ID where * matches within one path segment, of
	// our trust domain or of a federated one (named literally); "*" alone
	// matches every ID of our trust domain.
	// +optional
	Pattern string `json:"pattern,omitempty"`
	// TrustDomain allows every ID of that trust domain; a foreign one must
	// be federated (a FederatedTrustDomain) for its peers to verify.
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

// SchemeGroupVersion is meshid.dev/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: "meshid.dev", Version: "v1alpha1"}

// Resource is the plural resource of AuthorizationPolicy.
var Resource = SchemeGroupVersion.WithResource("authorizationpolicies")

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &AuthorizationPolicy{}, &AuthorizationPolicyList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
