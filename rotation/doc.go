// Package rotation owns when certificates are renewed: pure functions of the
// current time that the CA uses to pace renewals (RenewAt) and that renewal
// loops act on. Its subpackage bundle owns the trust bundle.
//
// Decisions here never read the clock themselves; callers pass now.
// rotation must not import ca/ or proxy/.
package rotation
