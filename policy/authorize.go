package policy

import (
	"fmt"
	"path"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DeniedError says why a peer was refused.
type DeniedError struct {
	Port   int
	Peer   spiffeid.ID
	Mode   Mode
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("policy: %s may not connect to port %d: %s", e.Peer, e.Port, e.Reason)
}

// Authorize decides whether peer, already verified against the bundle of
// its trust domain, may connect. It returns a *DeniedError when not. A peer
// of another trust domain is admitted only by a rule that names it (id,
// pattern or trustDomain), whatever the mode: all-authenticated and
// cluster-authenticated admit our trust domain's peers only (and
// all-authenticated, by the proxy's choice of bundle, any ID our own
// anchors sign, which Foreign tells apart).
func (p *Port) Authorize(peer spiffeid.ID) error {
	return p.authorize(peer, false)
}

// AuthorizeForeign is Authorize for a peer verified against a foreign
// trust domain's bundle (a federated one): only a rule that names it
// admits it, in every mode.
func (p *Port) AuthorizeForeign(peer spiffeid.ID) error {
	return p.authorize(peer, true)
}

func (p *Port) authorize(peer spiffeid.ID, foreign bool) error {
	if foreign && !peer.MemberOf(p.td) {
		if p.allows(peer) {
			return nil
		}
		return p.deny(peer, fmt.Sprintf("it is of trust domain %s, federated with us, and no allow rule of this port names it (id, pattern or trustDomain); mode %s admits only our own trust domain", peer.TrustDomain(), p.Mode))
	}
	switch p.Mode {
	case AllAuthenticated, AllUnauthenticated:
		return nil
	case ClusterAuthenticated:
		if peer.MemberOf(p.td) {
			return nil
		}
		if p.allows(peer) {
			return nil
		}
		return p.deny(peer, fmt.Sprintf("mode %s accepts only trust domain %s", p.Mode, p.td))
	}
	if p.allows(peer) {
		return nil
	}
	return p.deny(peer, "no allow rule names it (mode deny)")
}

func (p *peers) allows(peer spiffeid.ID) bool {
	if p.ids[peer] || p.tds[peer.TrustDomain()] {
		return true
	}
	if peer.MemberOf(p.td) {
		for _, prefix := range p.nsPath {
			if rest, ok := strings.CutPrefix(peer.Path(), prefix); ok && rest != "" && !strings.Contains(rest, "/") {
				return true
			}
		}
	}
	s := peer.String()
	for _, g := range p.globs {
		if g == "*" {
			if peer.MemberOf(p.td) {
				return true
			}
			continue
		}
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

func (p *Port) deny(peer spiffeid.ID, reason string) error {
	return &DeniedError{Port: p.Number, Peer: peer, Mode: p.Mode, Reason: reason}
}
