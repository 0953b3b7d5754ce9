// Package certmanager is the cert-manager upstream: an upstream.Authority
// that asks any cert-manager Issuer or ClusterIssuer (CA, Vault, Venafi, AWS
// PCA, step-issuer, ...) for meshid-ca's intermediate through a
// cert-manager.io/v1 CertificateRequest: spec.request is the CSR, isCA true,
// usages cert sign, crl sign and digital signature, the duration the
// Renewer asks for. It waits (a watch, bounded by Config.Timeout and the
// context) until the request is Approved and Ready, and returns
// status.certificate (the intermediate, then its chain) and status.ca (the
// roots, unless Config.RootPEM names them) as the answer, which the Renewer
// checks like any upstream's.
//
// One request per key: its name is the replica's name and the first 16 hex
// digits of the SHA-256 of the key (Name), so a retry after a lost answer
// finds the same request and never makes a second one for that key. A
// finished request (issued, denied, invalid, failed, or not done before the
// timeout) is deleted at once; one left by a replica that crashed while
// waiting goes with its Pod when Config.Owner names that Pod (a Kubernetes
// owner reference: the garbage collector deletes it).
//
// It talks to the API server with client-go's dynamic client and
// cert-manager's API types (already linked into meshid for `meshid install`),
// not cert-manager's generated clientset.
//
// RBAC, in the request's namespace only (a Role, not a ClusterRole):
//
//	apiGroups: ["cert-manager.io"]
//	resources: ["certificaterequests"]
//	verbs:     ["create", "get", "watch", "delete"]
//
// No status write: approval is cert-manager's approver (or approver-policy)
// and never meshid-ca's, so meshid-ca cannot approve its own request.
//
// certmanager imports issuer/upstream and shared nouns; it must not import
// ca/, proxy/, webhooks/ or rotation/.
package certmanager
