package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ExternalWorkload is a workload outside the cluster that gets the SPIFFE
// identity of a service account of its namespace. Its labels are what
// policies select it by, as a pod's are.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=extwl
// +kubebuilder:printcolumn:name="Service Account",type=string,JSONPath=`.spec.serviceAccount`
// +kubebuilder:printcolumn:name="Last Seen",type=date,JSONPath=`.status.lastSeen`
// +kubebuilder:printcolumn:name="Not After",type=string,JSONPath=`.status.notAfter`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ExternalWorkload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ExternalWorkloadSpec `json:"spec"`
	// +optional
	Status ExternalWorkloadStatus `json:"status,omitempty"`
}

// ExternalWorkloadSpec is what the operator says of the workload.
type ExternalWorkloadSpec struct {
	// ServiceAccount names the service account, in the object's namespace,
	// whose identity (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME) the
	// workload gets.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServiceAccount string `json:"serviceAccount"`

	// Addresses are the IP addresses the workload is reached at.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="self.all(a, isIP(a))",message="addresses must be IP addresses (IPv4 or IPv6), not host names"
	Addresses []string `json:"addresses,omitempty"`

	// Ports are the ports it serves on those addresses.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=64
	Ports []ExternalWorkloadPort `json:"ports,omitempty"`
}

// ExternalWorkloadPort is one port the workload serves.
type ExternalWorkloadPort struct {
	// Name of the port, as a Service's targetPort may name it.
	// +optional
	Name string `json:"name,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// Protocol is TCP; meshid proxies nothing else.
	// +kubebuilder:validation:Enum=TCP
	// +kubebuilder:default=TCP
	// +optional
	Protocol string `json:"protocol,omitempty"`
}

// ExternalWorkloadStatus is what meshid-ca and `meshid workload` record.
type ExternalWorkloadStatus struct {
	// Join is the pending one-time join token, written by `meshid
	// workload join` and removed by the join that uses it; nil when none
	// is pending.
	// +optional
	Join *JoinToken `json:"join,omitempty"`

	// Serial is the hexadecimal serial number of the certificate issued
	// last; only its holder may renew. Empty before the first join and
	// after `meshid workload revoke`.
	// +optional
	Serial string `json:"serial,omitempty"`
	// NotAfter is when that certificate expires.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// LastSeen is when the workload last joined or renewed.
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// JoinedAt is when the workload last used a join token.
	// +optional
	JoinedAt *metav1.Time `json:"joinedAt,omitempty"`
	// RevokedAt is when `meshid workload revoke` last stopped its
	// renewals.
	// +optional
	RevokedAt *metav1.Time `json:"revokedAt,omitempty"`
}

// JoinToken is a join token as the cluster keeps it: only its hash.
type JoinToken struct {
	// SHA256 is the lowercase hexadecimal SHA-256 of the token.
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{64}$`
	SHA256 string `json:"sha256"`
	// Expires is when the token stops being accepted.
	Expires metav1.Time `json:"expires"`
}

// ExternalWorkloadList is a list of ExternalWorkload.
//
// +kubebuilder:object:root=true
type ExternalWorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExternalWorkload `json:"items"`
}

// SchemeGroupVersion is meshid.dev/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: "meshid.dev", Version: "v1alpha1"}

// Resource is the plural resource of ExternalWorkload.
var Resource = SchemeGroupVersion.WithResource("externalworkloads")

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &ExternalWorkload{}, &ExternalWorkloadList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
