// Package certify is `meshid certify`: it does what meshid-proxy does at
// start-up (a fresh key, a CSR and a service-account token to meshid-ca,
// the CA's own SPIFFE ID verified), checks the answer is an X.509-SVID for
// that key, prints it, and can write it to new files in an existing folder
// (never over existing ones; the folder and the files are checked before
// the key is generated).
//
// It imports rotation (the client side of issuance), api, bundle,
// identity, cmd/internal/cli and its siblings certinfo and output.
package certify
