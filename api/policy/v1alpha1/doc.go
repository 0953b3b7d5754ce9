// Package v1alpha1 is the meshid.dev/v1alpha1 API: AuthorizationPolicy,
// the Kubernetes-native form of meshid-proxy's policy. meshid-ca serves the
// policies that select a pod to that pod's proxy (WatchPolicy), and
// meshid-webhook refuses invalid ones when they are applied.
//
// +kubebuilder:object:generate=true
// +groupName=meshid.dev
package v1alpha1
