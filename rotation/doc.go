// Package rotation owns when certificates are renewed: pure functions of the
// current time that the CA uses to pace renewals (RenewAt) and that renewal
// loops act on, and the client side of issuance: Certify asks the CA for a
// certificate with a fresh key, DialCA connects to it. Its subpackage bundle
// owns the trust bundle.
//
// Decisions here never read the clock themselves; callers pass now.
// rotation talks to the CA only through the generated client in ca/api; it
// must not import the rest of ca/, nor proxy/.
package rotation
