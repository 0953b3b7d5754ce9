// Package policy owns meshid's one authorization model: which peers may
// connect to each inbound port of a workload. The same types serve every
// place a policy appears: the CRD's rules (Rule is api/policy/v1alpha1's),
// the webhook's validation of an AuthorizationPolicy (FromSpec, Compile),
// the CA's file for one pod (Merge, Marshal) and the proxy's decision at
// each handshake (Parse, Port.Authorize). A policy is YAML (see Parse for
// the format), checked strictly, and compiled once into an immutable
// value; swapping policies is swapping pointers.
//
// It imports api/policy (the CRD types) and identity (namespace and
// service-account rules name identities the way the CA mints them), and
// nothing else from meshid.
package policy
