// Package rotation owns the client side of issuance and renewal: Certify
// asks the CA for a certificate with a fresh key, DialCA connects to it,
// and Renewer keeps a workload's certificate fresh on the CA's schedule.
// Its subpackages are the operator's side: anchor (trust-anchor rotation)
// and health (the checks behind `meshid check`).
//
// Decisions here never read the clock themselves; callers pass now.
// rotation talks to the CA only through the generated client in
// api/identity; it imports issuer/ and shared nouns, never ca/ or proxy/
// (proxy/ imports it).
package rotation
