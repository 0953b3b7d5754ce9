// Package check is `meshid check`: it asks whether the cluster can be read
// at all (the API server answers, the namespace exists, SelfSubjectAccess
// Reviews for each read), then reads what the preflight allows (the
// trust-bundle ConfigMap, the issuer Secret and cert-manager's Certificate,
// Issuer and anchor Secret for it, every CA replica's fleet report, the
// webhook's CA and serving certificate, the CA Deployment) and the proxies'
// /identity into rotation/health's Input, and prints health's rows as a
// table or JSON, once or on every --interval (JSON Lines with --watch).
//
// The checks themselves are rotation/health's; this package only reads and
// prints. It imports rotation/health, ca/fleet (the reports' format),
// ca/manifest (the names of what install creates), bundle,
// cmd/internal/cli, cmd/internal/kube and its siblings certinfo and output;
// checktest, its tests' World and cases, imports it.
package check
