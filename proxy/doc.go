// Package proxy owns meshid-proxy, the mTLS sidecar: it keeps the workload's
// certificate fresh (rotation.Renewer) and its trust bundle current (file
// and the CA's WatchBundle stream), terminates inbound mTLS and authorizes
// peers by policy, originates outbound mTLS and checks the server's
// identity, serves the SPIFFE Workload API, and reports on an admin
// endpoint. Outside the cluster (External, external.go) it joins as an
// ExternalWorkload with a one-time token, renews by presenting its current
// certificate, and keeps both in a state dir. On ports with request rules
// it serves HTTP/1.1 and HTTP/2 (net/http, x/net/http2) and decides every
// request (requests.go); other ports are byte pipes. Its subpackages own the snapshot every handshake reads (state),
// the Workload API server (workload) and the redirection of a pod's traffic
// into the proxy (redirect, which meshid-init programs); the policy it
// enforces is package policy's.
//
// The proxy talks to the CA only through the generated client in
// api/identity and rotation's client; it may use shared nouns and issuer/,
// and never imports ca/ or webhooks/.
package proxy
