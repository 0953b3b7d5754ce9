package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The bundle endpoint profiles of the SPIFFE Federation standard.
const (
	// ProfileSPIFFE authenticates the endpoint by its X.509-SVID, against
	// the foreign bundle itself (the initial one, then each fetched one).
	ProfileSPIFFE = "https_spiffe"
	// ProfileWeb authenticates the endpoint by a web certificate, against
	// the system roots.
	ProfileWeb = "https_web"
)

// FederatedTrustDomain is a foreign trust domain meshid trusts: where its
// bundle is published, how its endpoint is authenticated, and (status)
// the bundle last fetched from it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ftd
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="Profile",type=string,JSONPath=`.spec.profile`
// +kubebuilder:printcolumn:name="Refreshed",type=date,JSONPath=`.status.lastRefresh`
// +kubebuilder:printcolumn:name="Failures",type=integer,JSONPath=`.status.failures`
type FederatedTrustDomain struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec FederatedTrustDomainSpec `json:"spec"`
	// +optional
	Status FederatedTrustDomainStatus `json:"status,omitempty"`
}

// FederatedTrustDomainSpec says where and how to fetch the bundle.
//
// +kubebuilder:validation:XValidation:rule="self.profile != 'https_spiffe' || (has(self.endpointSPIFFEID) && self.endpointSPIFFEID.startsWith('spiffe://'))",message="profile https_spiffe needs endpointSPIFFEID: the spiffe:// ID the bundle endpoint presents"
type FederatedTrustDomainSpec struct {
	// TrustDomain is the foreign trust domain's name, e.g. b.example; not
	// ours.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	TrustDomain string `json:"trustDomain"`

	// BundleEndpointURL is the https URL of its SPIFFE bundle endpoint.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://`
	BundleEndpointURL string `json:"bundleEndpointURL"`

	// Profile is how the endpoint is authenticated: https_spiffe (its
	// SVID, EndpointSPIFFEID, against the foreign bundle) or https_web (a
	// web certificate, against the system roots).
	// +kubebuilder:validation:Enum=https_spiffe;https_web
	Profile string `json:"profile"`

	// EndpointSPIFFEID is the SPIFFE ID the endpoint presents; required
	// with https_spiffe, unused with https_web.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	EndpointSPIFFEID string `json:"endpointSPIFFEID,omitempty"`

	// InitialBundle is the foreign bundle to trust before the first fetch
	// (PEM anchors, or a SPIFFE bundle document); with https_spiffe it is
	// what authenticates the first fetch. Unused once a fetched bundle is
	// stored in the status.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	InitialBundle string `json:"initialBundle,omitempty"`
}

// FederatedTrustDomainStatus is what meshid-ca fetched, written by the
// replica that fetched it; every replica serves the bundle stored here.
type FederatedTrustDomainStatus struct {
	// Bundle is the last good SPIFFE bundle document fetched.
	// +optional
	Bundle string `json:"bundle,omitempty"`
	// Sequence is that document's spiffe_sequence, if it had one.
	// +optional
	Sequence *uint64 `json:"sequence,omitempty"`
	// LastRefresh is when Bundle was fetched.
	// +optional
	LastRefresh *metav1.Time `json:"lastRefresh,omitempty"`
	// Failures counts the refused fetches since the last good one.
	// +optional
	Failures int64 `json:"failures,omitempty"`
	// LastFailure is when the latest refused fetch was.
	// +optional
	LastFailure *metav1.Time `json:"lastFailure,omitempty"`
	// LastError says why it was refused; the last good bundle stays in
	// force.
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// FederatedTrustDomainList is a list of FederatedTrustDomain.
//
// +kubebuilder:object:root=true
type FederatedTrustDomainList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FederatedTrustDomain `json:"items"`
}

// SchemeGroupVersion is meshid.dev/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: "meshid.dev", Version: "v1alpha1"}

// Resource is the plural resource of FederatedTrustDomain.
var Resource = SchemeGroupVersion.WithResource("federatedtrustdomains")

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &FederatedTrustDomain{}, &FederatedTrustDomainList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
