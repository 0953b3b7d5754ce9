// Package external owns what meshid-ca decides about ExternalWorkloads
// (api/workload/v1alpha1): the one-time join token (256 random bits, kept
// in the object's status only as its SHA-256, with an expiry), the checks
// of a join and of a renewal, and the status a successful one records. It
// reads and writes the objects through Store, which gets them from the API
// server at every call (no cache: a deleted or revoked object stops
// renewals at once) and updates their status only if they have not
// changed since (optimistic concurrency: a token is used once, even
// against several CA replicas). Slices and Publisher put the workloads'
// addresses behind the Services that select them, as EndpointSlices
// labelled managed-by externalworkloads.meshid.dev and owned by the
// ExternalWorkload; discovery tells transparent proxies those endpoints
// are meshed as the workload's service account.
//
// It imports api/ and identity; never rotation/, proxy/ or webhooks/.
package external
