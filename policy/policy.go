package policy

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/identity"
)

// Mode is what a port accepts before its allow rules are applied.
type Mode string

const (
	// Deny accepts only peers an allow rule names.
	Deny Mode = "deny"
	// AllAuthenticated accepts any peer with a certificate from a trusted anchor.
	AllAuthenticated Mode = "all-authenticated"
	// ClusterAuthenticated accepts any authenticated peer of the proxy's own trust domain.
	ClusterAuthenticated Mode = "cluster-authenticated"
	// AllUnauthenticated also accepts plain TCP; TLS peers that present a
	// certificate must still present a valid one.
	AllUnauthenticated Mode = "all-unauthenticated"
)

var modes = []Mode{Deny, AllAuthenticated, ClusterAuthenticated, AllUnauthenticated}

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("policy: invalid policy")

// File is the YAML form of a policy.
type File struct {
	// Default is the mode of inbound ports not listed; empty means deny.
	Default Mode `json:"default,omitempty"`
	// Ports lists inbound ports by their listen port number.
	Ports []PortFile `json:"ports,omitempty"`
}

// PortFile is the YAML form of one port's policy.
type PortFile struct {
	Port  int    `json:"port"`
	Mode  Mode   `json:"mode,omitempty"` // empty means deny
	Allow []Rule `json:"allow,omitempty"`
	// Requests are request rules (see Port.Decide); none means the port
	// is a byte pipe once the connection is admitted.
	Requests []RequestRule `json:"requests,omitempty"`
}

// Rule allows peers; exactly one field is set: ID (one SPIFFE ID),
// ServiceAccount (NAMESPACE/NAME in the proxy's trust domain), Namespace
// (every service account in it, in the proxy's trust domain) or Pattern (a
// SPIFFE ID in which * matches one path segment or part of one, as in
// path.Match; "*" alone matches every ID). It is the CRD's own type, so
// that an AuthorizationPolicy's rules reach the proxy unconverted.
type Rule = v1alpha1.Rule

// Policy is a compiled policy. It is immutable.
type Policy struct {
	def   *Port
	ports map[int]*Port
	// Source says where it came from, for logs.
	Source string
}

// Port is the compiled policy of one inbound port.
type Port struct {
	Number int
	Mode   Mode
	peers
	requests []requestRule
}

// peers is a compiled list of Rules: the peers they name.
type peers struct {
	td     spiffeid.TrustDomain
	ids    map[spiffeid.ID]bool
	nsPath []string // "/ns/NAME/sa/" prefixes
	globs  []string
	tds    map[spiffeid.TrustDomain]bool
}

// Default returns a policy that applies mode to every port.
func Default(td spiffeid.TrustDomain, mode Mode) *Policy {
	return &Policy{def: &Port{Mode: mode, peers: peers{td: td}}, ports: map[int]*Port{}, Source: "default (" + string(mode) + ")"}
}

// Parse reads and compiles a YAML policy for trust domain td. Unknown
// fields, unknown modes, invalid IDs and names, a rule with no or several
// fields, a port listed twice and allow rules on a port that accepts every
// authenticated peer anyway are all refused, with what to fix.
//
//	default: deny                 # ports not listed below
//	ports:
//	- port: 8443                  # the listen port of an --inbound
//	  mode: deny                  # deny | all-authenticated | cluster-authenticated | all-unauthenticated
//	  allow:
//	  - id: spiffe://cluster.local/ns/shop/sa/web
//	  - serviceAccount: shop/checkout
//	  - namespace: monitoring
//	  - pattern: spiffe://cluster.local/ns/*/sa/prometheus
func Parse(data []byte, td spiffeid.TrustDomain) (*Policy, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Compile(f, td)
}

// Compile checks and compiles f (see Parse).
func Compile(f File, td spiffeid.TrustDomain) (*Policy, error) {
	if td.IsZero() {
		return nil, fmt.Errorf("%w: no trust domain", ErrInvalid)
	}
	def, err := checkMode(f.Default, "default")
	if err != nil {
		return nil, err
	}
	p := &Policy{def: &Port{Mode: def, peers: peers{td: td}}, ports: map[int]*Port{}}
	for i, pf := range f.Ports {
		where := fmt.Sprintf("ports[%d]", i)
		if pf.Port < 1 || pf.Port > 65535 {
			return nil, fmt.Errorf("%w: %s: port %d is not between 1 and 65535", ErrInvalid, where, pf.Port)
		}
		where = fmt.Sprintf("ports[%d] (port %d)", i, pf.Port)
		if _, dup := p.ports[pf.Port]; dup {
			return nil, fmt.Errorf("%w: %s: the port is listed twice; merge the two entries", ErrInvalid, where)
		}
		port, err := compilePort(pf, td, where)
		if err != nil {
			return nil, err
		}
		p.ports[pf.Port] = port
	}
	return p, nil
}

// Validate reports whether m is a known mode (empty means deny).
func (m Mode) Validate() error {
	if m == "" {
		return nil
	}
	for _, known := range modes {
		if m == known {
			return nil
		}
	}
	return fmt.Errorf("%w: unknown mode %q; use one of %s", ErrInvalid, m, joinModes())
}

// AcceptsEveryPeer reports whether m admits every peer whose certificate
// verifies against a trusted anchor, of any trust domain, so that allow
// rules add nothing to it.
func (m Mode) AcceptsEveryPeer() bool { return m == AllAuthenticated || m == AllUnauthenticated }

func checkMode(m Mode, where string) (Mode, error) {
	if err := m.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	return m.OrDeny(), nil
}

// OrDeny returns m, or Deny when m is empty.
func (m Mode) OrDeny() Mode {
	if m == "" {
		return Deny
	}
	return m
}

func joinModes() string {
	s := make([]string, len(modes))
	for i, m := range modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

func compilePort(pf PortFile, td spiffeid.TrustDomain, where string) (*Port, error) {
	mode, err := checkMode(pf.Mode, where)
	if err != nil {
		return nil, err
	}
	port := &Port{Number: pf.Port, Mode: mode, peers: peers{td: td, ids: map[spiffeid.ID]bool{}, tds: map[spiffeid.TrustDomain]bool{}}}
	if len(pf.Allow) > 0 && mode.AcceptsEveryPeer() {
		return nil, fmt.Errorf("%w: %s: mode %s already accepts every authenticated peer, so its allow rules would do nothing; use mode deny to restrict, or remove the rules", ErrInvalid, where, mode)
	}
	for j, r := range pf.Allow {
		rw := fmt.Sprintf("%s allow[%d]", where, j)
		if err := port.add(r, rw); err != nil {
			return nil, err
		}
	}
	if err := port.compileRequests(pf.Requests, where); err != nil {
		return nil, err
	}
	return port, nil
}

func (p *peers) add(r Rule, where string) error {
	set := 0
	for _, v := range []string{r.ID, r.ServiceAccount, r.Namespace, r.Pattern, r.TrustDomain} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: %s: a rule sets exactly one of id, serviceAccount, namespace, pattern, trustDomain (it sets %d)", ErrInvalid, where, set)
	}
	switch {
	case r.ID != "":
		id, err := spiffeid.FromString(r.ID)
		if err != nil {
			return fmt.Errorf("%w: %s: id %q: %w", ErrInvalid, where, r.ID, err)
		}
		p.ids[id] = true // a foreign one verifies only once its trust domain is federated
	case r.ServiceAccount != "":
		ns, name, ok := strings.Cut(r.ServiceAccount, "/")
		if !ok {
			return fmt.Errorf("%w: %s: serviceAccount %q must be NAMESPACE/NAME", ErrInvalid, where, r.ServiceAccount)
		}
		id, err := identity.ServiceAccount{Namespace: ns, Name: name}.ID(p.td)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, where, err)
		}
		p.ids[id] = true
	case r.Namespace != "":
		if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
			return fmt.Errorf("%w: %s: namespace %q: %s", ErrInvalid, where, r.Namespace, strings.Join(errs, "; "))
		}
		p.nsPath = append(p.nsPath, "/ns/"+r.Namespace+"/sa/")
	case r.Pattern != "":
		if r.Pattern != "*" {
			if !strings.HasPrefix(r.Pattern, "spiffe://") {
				return fmt.Errorf("%w: %s: pattern %q must be \"*\" or start with spiffe://", ErrInvalid, where, r.Pattern)
			}
			if _, err := path.Match(r.Pattern, ""); err != nil {
				return fmt.Errorf("%w: %s: pattern %q: %w", ErrInvalid, where, r.Pattern, err)
			}
			host, _, _ := strings.Cut(strings.TrimPrefix(r.Pattern, "spiffe://"), "/")
			if _, err := spiffeid.TrustDomainFromString(host); err != nil || !strings.Contains(r.Pattern[len("spiffe://"+host):], "/") {
				return fmt.Errorf("%w: %s: pattern %q must name its trust domain literally, then a path (spiffe://%s/ns/*/sa/NAME; a foreign one like spiffe://b.example/ns/*/sa/NAME)", ErrInvalid, where, r.Pattern, p.td.Name())
			}
		}
		p.globs = append(p.globs, r.Pattern)
	case r.TrustDomain != "":
		td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
		if err != nil {
			return fmt.Errorf("%w: %s: trustDomain %q: %w", ErrInvalid, where, r.TrustDomain, err)
		}
		p.tds[td] = true
	}
	return nil
}

// For returns the policy of inbound port n.
func (p *Policy) For(n int) *Port {
	if port, ok := p.ports[n]; ok {
		return port
	}
	d := *p.def
	d.Number = n
	return &d
}

// Ports lists the ports the policy names.
func (p *Policy) Ports() []int {
	out := make([]int, 0, len(p.ports))
	for n := range p.ports {
		out = append(out, n)
	}
	return out
}
