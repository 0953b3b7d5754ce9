// Package inspect is `meshid inspect`: it decodes certificates (PEM or
// DER) and the private keys beside them (their type and the certificate
// each matches, never their bytes), and, with a bundle, verifies the first
// certificate against it (as an X.509-SVID when it carries a SPIFFE ID) and
// names the anchor that validated it.
//
// It imports bundle, cmd/internal/cli and its siblings certinfo and output.
package inspect
