// Package v1alpha1 holds ExternalWorkload (meshid.dev/v1alpha1): a machine
// outside Kubernetes (a VM, a bare-metal host, a laptop) that joins the
// mesh under a service account's identity. `meshid workload join` gives it
// a one-time join token; meshid-ca exchanges that token for its first
// certificate (JoinExternal) and renews it for the holder of the current
// one (RenewExternal) while the object exists. It is apart from
// api/policy/v1alpha1 (the same group) so that each type's generated code
// and CRD stay in files of their own.
//
// It imports only Kubernetes' API machinery.
//
// +kubebuilder:object:generate=true
// +groupName=meshid.dev
package v1alpha1
