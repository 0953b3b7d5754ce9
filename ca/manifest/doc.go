// Package manifest owns what `meshid install` renders: the Kubernetes
// objects of a meshid control plane (namespace, service account,
// least-privilege RBAC, the meshid-ca Deployment and Service, the trust
// bundle, the issuer or the cert-manager objects that manage it, and the
// expiry alert rules), built as typed API objects from Options.
//
// It only builds objects; checking the trust material and applying the
// objects are the caller's. It imports only shared nouns (api/policy/crd for the CRD it installs);
// it must not import proxy/ or webhooks/.
package manifest
