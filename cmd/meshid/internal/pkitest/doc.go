// Package pkitest makes trust material for the CLI's tests: anchors,
// issuers and workload leaves with chosen validity, as values, PEM and
// files. It is for tests only.
//
// It imports issuer and bundle.
package pkitest
