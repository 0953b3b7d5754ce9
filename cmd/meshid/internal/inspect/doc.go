// Package inspect is `meshid inspect`: it decodes PEM certificates and,
// with a bundle, verifies the first against it (as an X.509-SVID when it
// carries a SPIFFE ID) and names the anchor that validated it.
//
// It imports bundle, cmd/internal/cli and its siblings certinfo and output.
package inspect
