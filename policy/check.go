package policy

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Reasons of a Check beside Decide's.
const (
	ReasonPeerDenied  = "peer_denied"  // the connection rules do not admit the peer
	ReasonInvalidPath = "invalid_path" // NormalizePath refused the path
)

// Call is one request as it arrives, before normalisation.
type Call struct {
	// Peer is the verified SPIFFE ID of the caller; zero for plain TCP.
	Peer spiffeid.ID
	// Method, EscapedPath (url.URL.EscapedPath) and Host (the Host header
	// or :authority) as sent.
	Method, EscapedPath, Host string
	// GRPC says the request is a gRPC call (content-type application/grpc).
	GRPC bool
}

// Check is the whole decision on one request to the port, the one the
// proxy makes and `meshid policy explain` prints: the connection rules
// again (Admits), the path and host normalised, then Decide. It returns
// the decision and the normalised path; err says why the connection rules
// or NormalizePath refused (then the decision's reason is
// ReasonPeerDenied or ReasonInvalidPath).
func (p *Port) Check(c Call) (d Decision, path string, err error) {
	if err := p.Admits(c.Peer); err != nil {
		return Decision{Reason: ReasonPeerDenied}, "", err
	}
	path, err = NormalizePath(c.EscapedPath)
	if err != nil {
		return Decision{Reason: ReasonInvalidPath}, "", err
	}
	r := Request{Peer: c.Peer, Method: c.Method, Path: path, Host: NormalizeHost(c.Host), GRPC: c.GRPC}
	return p.Decide(&r), path, nil
}

// Admits is the port's connection decision for peer, whose certificate
// verified (zero: plain TCP, admitted only in mode all-unauthenticated). A
// peer of another trust domain is taken as federated (AuthorizeForeign:
// only a rule naming it admits it), the stricter of the two readings,
// since a request does not say which bundle verified its connection.
func (p *Port) Admits(peer spiffeid.ID) error {
	switch {
	case peer.IsZero() && p.Mode != AllUnauthenticated:
		return fmt.Errorf("policy: plain TCP is not admitted on port %d (mode %s)", p.Number, p.Mode)
	case peer.IsZero():
		return nil
	case !peer.MemberOf(p.td):
		return p.AuthorizeForeign(peer)
	}
	return p.Authorize(peer)
}

// Why is the decision in one line, as the proxy answers a denial and
// `meshid policy explain` prints it.
func (d Decision) Why() string {
	where := d.Policy
	if where == "" {
		where = "the policy file"
	}
	switch {
	case d.Allowed && !d.Audited && d.Rule == "":
		return "allowed: the port has no request rules"
	case d.Allowed && !d.Audited:
		return fmt.Sprintf("allowed by %s rule %s", where, d.Rule)
	case d.Reason == ReasonPeerDenied || d.Reason == ReasonInvalidPath:
		return "denied (" + d.Reason + ")"
	}
	why := fmt.Sprintf("denied by %s rule %s (%s)", where, d.Rule, d.Reason)
	if d.Rule == "" {
		why = fmt.Sprintf("denied: no request rule of %s names the caller (%s)", where, d.Reason)
	}
	if d.Audited {
		return "allowed in audit mode; enforce would have " + why
	}
	return why
}
