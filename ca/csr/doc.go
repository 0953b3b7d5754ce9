// Package csr owns the checks a certificate signing request must pass before
// the CA signs anything for it: a valid self-signature, an accepted key type
// and size, no request to be a CA or for usages or name constraints, and no
// name other than the identity the caller proved, spelled exactly so, once.
// Nothing in the CSR is copied into a certificate: the CA builds leaves from
// its own template and only takes the public key; a request that asks for
// more is refused rather than silently cut down, so its author learns.
//
// It imports nothing from meshid.
package csr
