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

	// Requests are request rules: when set, meshid-proxy parses the port's
	// traffic as HTTP/1.1 or HTTP/2 (gRPC included) after mTLS and lets a
	// request through only when a rule allows it; without them the port
	// is a byte pipe and only the connection rules above apply.
	// +optional
	Requests *Requests `json:"requests,omitempty"`
}

// Requests are the request rules of a port.
type Requests struct {
	// Mode is enforce (a request no rule allows is refused) or audit (it
	// is let through, logged and counted). A rule's own mode wins over it.
	// +kubebuilder:validation:Enum=enforce;audit
	// +kubebuilder:default=enforce
	// +optional
	Mode string `json:"mode,omitempty"`

	// Rules allow requests; a request passes when one of them allows it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Rules []RequestRule `json:"rules"`
}

// RequestRule allows the peers From to make the requests Matches
// describe, on the hosts Hosts.
type RequestRule struct {
	// Name names the rule in metrics, logs and denials: a DNS label,
	// unique in the policy.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Mode is enforce or audit; empty means the mode of Requests.
	// +kubebuilder:validation:Enum=enforce;audit
	// +optional
	Mode string `json:"mode,omitempty"`

	// From are the peers the rule applies to, as the connection's allow
	// rules name them; empty means every peer the port admits.
	// +optional
	// +listType=atomic
	From []Rule `json:"from,omitempty"`

	// Hosts are the Host (HTTP/1.1) or :authority (HTTP/2) names allowed,
	// lower case, without port; "*.example.com" matches any name below
	// example.com. Empty means any host.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Hosts []string `json:"hosts,omitempty"`

	// Matches are the requests allowed; a request is allowed when one
	// matches. Empty means every request.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Matches []RequestMatch `json:"matches,omitempty"`
}

// RequestMatch describes requests, as Gateway API's HTTPRouteMatch (method,
// path) and GRPCRouteMatch (grpc) do; every field set must match.
type RequestMatch struct {
	// Method is an HTTP method, exactly (GET, POST, ...); empty means any.
	// +optional
	Method string `json:"method,omitempty"`

	// Path matches the request's path after normalisation.
	// +optional
	Path *PathMatch `json:"path,omitempty"`

	// GRPC matches a gRPC call (content-type application/grpc) by its
	// service and method; it excludes Method and Path.
	// +optional
	GRPC *GRPCMatch `json:"grpc,omitempty"`
}

// PathMatch matches a request path.
type PathMatch struct {
	// Type is Exact (the whole path) or PathPrefix (whole path segments:
	// /api matches /api and /api/x, not /apix).
	// +kubebuilder:validation:Enum=Exact;PathPrefix
	// +kubebuilder:default=PathPrefix
	// +optional
	Type string `json:"type,omitempty"`
	// Value is a normalised absolute path (no ., .. or empty segments).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// GRPCMatch matches a gRPC method /SERVICE/METHOD.
type GRPCMatch struct {
	// Service is the fully qualified service (payments.v1.Charge); each
	// dot-separated segment may be * (payments.v1.*). Empty means any.
	// +optional
	Service string `json:"service,omitempty"`
	// Method is the method name, or *; empty means any.
	// +optional
	Method string `json:"method,omitempty"`
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
