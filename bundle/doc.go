// Package bundle owns the trust bundle: the set of trust anchors (CA
// certificates) a workload verifies peers against, as published in a
// ConfigMap or a file and streamed by the CA.
//
// A Bundle is parsed and validated once, is immutable, and carries a
// canonical PEM form and its SHA-256, which names the bundle version
// everywhere (metrics, the Workload API, rotation acknowledgements).
//
// It imports nothing from meshid.
package bundle
