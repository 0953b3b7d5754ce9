// Package pkitest is the CLI tests' shorthand for trust material: anchors,
// issuers and workload leaves with chosen validity, as values, PEM and
// files, made by issuer/issuertest. It is for tests only.
//
// It imports issuer, issuer/issuertest and bundle.
package pkitest
