package foreign

import (
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// Check refuses a foreign bundle of td that cannot be trusted at now:
// without X.509 anchors, with an anchor outside its validity, with an
// anchor whose SPIFFE ID names another trust domain, or with one of ours
// (local; an endpoint answering our own bundle is misconfigured, and
// taking it would let our own identities pass as td's).
func Check(b *spiffebundle.Bundle, td spiffeid.TrustDomain, local *bundle.Bundle, now time.Time) error {
	anchors := b.X509Authorities()
	if len(anchors) == 0 {
		return refuse(NoAnchors, "the bundle of %s has no X.509 authority", td)
	}
	ours := map[string]bool{}
	if local != nil {
		for _, a := range local.Anchors() {
			ours[bundle.Fingerprint(a)] = true
		}
	}
	for _, a := range anchors {
		switch {
		case now.After(a.NotAfter):
			return refuse(Expired, "the bundle of %s has an anchor (%s) that expired at %s", td, subject(a), a.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(a.NotBefore):
			return refuse(Expired, "the bundle of %s has an anchor (%s) not valid before %s", td, subject(a), a.NotBefore.UTC().Format(time.RFC3339))
		case ours[bundle.Fingerprint(a)]:
			return refuse(OtherTrustDomain, "the bundle of %s holds an anchor of our own trust domain (%s): the endpoint serves our bundle, not %s's", td, subject(a), td)
		}
		for _, u := range a.URIs {
			if id, err := spiffeid.FromURI(u); err == nil && id.TrustDomain() != td {
				return refuse(OtherTrustDomain, "the bundle of %s has an anchor of trust domain %s (%s)", td, id.TrustDomain(), subject(a))
			}
		}
	}
	return nil
}

func subject(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "SHA-256 " + bundle.Fingerprint(c)
}
