// Package proxy owns meshid-proxy, the mTLS sidecar: it keeps the workload's
// certificate fresh (rotation.Renewer) and its trust bundle current (file
// and the CA's WatchBundle stream), terminates inbound mTLS and authorizes
// peers by policy, originates outbound mTLS and checks the server's
// identity, serves the SPIFFE Workload API, and reports on an admin
// endpoint. Its subpackages own the snapshot every handshake reads (state),
// the policy (policy) and the Workload API server (workload).
//
// The proxy talks to the CA only through the generated client in ca/api; it
// may use ca/identity (the one SA-to-SPIFFE-ID mapping) and must import
// nothing else from ca/ or issuer/.
package proxy
