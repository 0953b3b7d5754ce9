// Package policy owns meshid's one authorization model: which peers may
// connect to each inbound port of a workload, and, on ports with request
// rules, which HTTP and gRPC requests they may make. The same types serve
// every place a policy appears: the CRD's rules (Rule is
// api/policy/v1alpha1's, RequestRule wraps its request rule), the
// webhook's validation of an AuthorizationPolicy (FromSpec, Compile), the
// CA's file for one pod (Merge, Marshal) and the proxy's decisions at each
// handshake (Parse, Port.Authorize) and each request (Port.Decide, after
// NormalizePath and NormalizeHost, the one spelling of a path and host).
// A policy is YAML (see Parse for the format), checked strictly, and
// compiled once into an immutable value; swapping policies is swapping
// pointers. docs/policy.md describes the request rules.
//
// It imports api/policy (the CRD types) and identity (namespace and
// service-account rules name identities the way the CA mints them), and
// nothing else from meshid.
package policy
