// Package check is `meshid check`: it reads the cluster (the trust-bundle
// ConfigMap, the issuer Secret and cert-manager's Certificate for it, the
// webhook's CA and serving certificate, the CA Deployment) and the proxies'
// /identity into rotation/health's Input, and prints health's rows as a
// table or JSON, once or on every --interval.
//
// The checks themselves are rotation/health's; this package only reads and
// prints. It imports rotation/health, ca/manifest (the names of what
// install creates), bundle, cmd/internal/cli, cmd/internal/kube and its
// siblings certinfo and output.
package check
