// Package health owns the chain-health checks behind `meshid check`: given
// what was read from the cluster (whether the API server answers, the
// namespace exists and RBAC allows the reads; the trust-bundle ConfigMap,
// the issuer Secret and cert-manager's objects for it; what every CA
// replica reports it has in force and which updates it refused; the
// proxies the replicas serve and those asked directly; the federated trust
// domains' stored bundles), it says row by row
// what is fine, what needs attention and what is broken, with a hint for
// each problem that names the command to run, and names the earliest expiry
// of what is in use: the time to outage.
//
// Checks are pure functions of their Input (now included); reading the
// cluster is the caller's job. It imports issuer/, ca/fleet (the reports'
// format) and shared nouns (api/federation among them).
package health
