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

// Authorize decides whether peer, already verified against the trust
// bundle, may connect. It returns a *DeniedError when not.
func (p *Port) Authorize(peer spiffeid.ID) error {
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
	if p.ids[peer] {
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
			return true
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
