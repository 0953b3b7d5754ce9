package cli

import (
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
)

// CAIDHelp documents --ca-id.
const CAIDHelp = "SPIFFE ID the CA must present (default spiffe://TRUST_DOMAIN/ns/meshid/sa/meshid-ca)"

// AddCAIDFlag binds --ca-id.
func AddCAIDFlag(fs *pflag.FlagSet, v *string) { fs.StringVar(v, "ca-id", "", CAIDHelp) }

// CAID is the identity the CA must present: flag when set, else meshid-ca's
// default identity in td. A bad flag is a usage error.
func CAID(flag string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if flag == "" {
		id, err := identity.DefaultCA.ID(td)
		if err != nil {
			return spiffeid.ID{}, Usagef("%v", err)
		}
		return id, nil
	}
	id, err := spiffeid.FromString(flag)
	if err != nil {
		return spiffeid.ID{}, Usagef("--ca-id %q: %v", flag, err)
	}
	return id, nil
}
