// Package v1alpha1 is FederatedTrustDomain of the meshid.dev/v1alpha1 API:
// a foreign trust domain whose SPIFFE bundle meshid-ca fetches from its
// bundle endpoint, stores in the object's status (so that every replica and
// a restarted CA agree) and streams to proxies beside the local bundle.
// AuthorizationPolicy, of the same group and version, is in api/policy.
//
// It imports Kubernetes' API machinery, go-spiffe and the shared noun bundle
// (Anchors: the one reading of the anchors in force).
//
// +kubebuilder:object:generate=true
// +groupName=meshid.dev
package v1alpha1
