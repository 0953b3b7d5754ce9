package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrNotServiceAccount is wrapped when a username or SPIFFE ID does not name
// a Kubernetes service account.
var ErrNotServiceAccount = errors.New("identity: not a service account")

const usernamePrefix = "system:serviceaccount:"

// ServiceAccount names a Kubernetes service account.
type ServiceAccount struct {
	Namespace string
	Name      string
}

// String returns NAMESPACE/NAME.
func (sa ServiceAccount) String() string { return sa.Namespace + "/" + sa.Name }

// ID returns spiffe://TD/ns/NAMESPACE/sa/NAME. Names that Kubernetes would not
// accept for a namespace (DNS-1123 label) or service account (DNS-1123
// subdomain) are refused.
func (sa ServiceAccount) ID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("identity: empty trust domain")
	}
	if errs := validation.IsDNS1123Label(sa.Namespace); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: namespace %q: %s", ErrNotServiceAccount, sa.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(sa.Name); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: service account name %q: %s", ErrNotServiceAccount, sa.Name, strings.Join(errs, "; "))
	}
	id, err := spiffeid.FromSegments(td, "ns", sa.Namespace, "sa", sa.Name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %s: %w", sa, err)
	}
	return id, nil
}

// FromUsername parses a Kubernetes username of the form
// system:serviceaccount:NAMESPACE:NAME.
func FromUsername(username string) (ServiceAccount, error) {
	rest, ok := strings.CutPrefix(username, usernamePrefix)
	if !ok {
		return ServiceAccount{}, fmt.Errorf("%w: username %q does not start with %q", ErrNotServiceAccount, username, usernamePrefix)
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return ServiceAccount{}, fmt.Errorf("%w: username %q is not %sNAMESPACE:NAME", ErrNotServiceAccount, username, usernamePrefix)
	}
	return ServiceAccount{Namespace: ns, Name: name}, nil
}

// FromID reads the service account back from an ID built by
// ServiceAccount.ID.
func FromID(id spiffeid.ID) (ServiceAccount, error) {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ServiceAccount{}, fmt.Errorf("%w: %s does not have the path /ns/NAMESPACE/sa/NAME", ErrNotServiceAccount, id)
	}
	sa := ServiceAccount{Namespace: parts[1], Name: parts[3]}
	if _, err := sa.ID(id.TrustDomain()); err != nil {
		return ServiceAccount{}, err
	}
	return sa, nil
}

// DefaultCA is the service account meshid-ca runs as by default; clients
// expect the CA to present its ID unless told otherwise.
var DefaultCA = ServiceAccount{Namespace: "meshid", Name: "meshid-ca"}

// Defaults every meshid component uses unless told otherwise (--trust-domain,
// --audience): one value each, so that the CA, the proxy, the webhook, the
// manifest and the CLI always agree.
const (
	// DefaultTrustDomain is the trust domain of workload IDs, named after
	// Kubernetes' default cluster domain.
	DefaultTrustDomain = "cluster.local"
	// DefaultAudience is the audience of the service-account tokens that
	// prove a workload's identity to meshid-ca.
	DefaultAudience = "identity.meshid.dev"
)
