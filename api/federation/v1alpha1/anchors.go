package v1alpha1

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// Where the anchors in force come from.
const (
	FromStatus  = "stored bundle"  // status.bundle: the last good fetch
	FromInitial = "initial bundle" // spec.initialBundle, before any fetch
)

// Anchors returns the trust domain f names and its anchors in force: those
// of the bundle in its status, else of its initial bundle (a SPIFFE bundle
// document, or PEM anchors such as a meshid ca-bundle.crt), and which of
// the two they came from. meshid-ca trusts them and `meshid check` reports
// them; both read them here.
func (f *FederatedTrustDomain) Anchors() (spiffeid.TrustDomain, []*x509.Certificate, string, error) {
	td, err := spiffeid.TrustDomainFromString(f.Spec.TrustDomain)
	if err != nil {
		return td, nil, "", fmt.Errorf("spec.trustDomain: %w", err)
	}
	from, data := FromStatus, strings.TrimSpace(f.Status.Bundle)
	if data == "" {
		from, data = FromInitial, strings.TrimSpace(f.Spec.InitialBundle)
	}
	var anchors []*x509.Certificate
	switch {
	case data == "":
		return td, nil, "", errors.New("no bundle: never fetched, and no spec.initialBundle")
	case from == FromStatus || strings.HasPrefix(data, "{"):
		b, err := spiffebundle.Parse(td, []byte(data))
		if err != nil {
			return td, nil, "", fmt.Errorf("the %s (a SPIFFE bundle document) does not parse: %w", from, err)
		}
		anchors = b.X509Authorities()
	default:
		b, err := bundle.Parse([]byte(data))
		if err != nil {
			return td, nil, "", fmt.Errorf("the %s (PEM anchors): %w", from, err)
		}
		anchors = b.Anchors()
	}
	if len(anchors) == 0 {
		return td, nil, "", fmt.Errorf("the %s has no X.509 anchor", from)
	}
	return td, anchors, from, nil
}
