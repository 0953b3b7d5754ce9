// Package issuertest makes the certificate material tests need, the one
// test PKI of the module: trust anchors and intermediates as issuer makes
// them (Anchor, Intermediate), X.509-SVIDs as meshid-ca signs them (Leaf),
// and certificates with one defect each (Certificate with NotCA,
// KeyUsage, Expired; Leaf with CA), with PEM encoders and a file writer.
// Every helper takes a testing.TB and fails the test on error.
//
// Like net/http/httptest it is for tests: any package may import it from
// its _test.go files (and the test/ harness from anywhere), nothing else
// may. It imports only issuer and shared nouns (test/layout_test.go checks
// both).
package issuertest
