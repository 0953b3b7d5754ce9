package policy

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshid/meshid/api/policy/v1alpha1"
)

// RequestRule is the policy file's form of a request rule: the CRD's rule,
// with the AuthorizationPolicy it came from and its mode resolved (the
// policy's when the rule sets none).
type RequestRule struct {
	// Policy is the NAMESPACE/NAME of the AuthorizationPolicy, for metrics,
	// logs and denials; empty in a hand-written file.
	Policy               string `json:"policy,omitempty"`
	v1alpha1.RequestRule `json:",inline"`
}

// RequestMode says what happens to a request no rule allows.
type RequestMode string

const (
	// Enforce refuses it (HTTP 403, gRPC PERMISSION_DENIED).
	Enforce RequestMode = "enforce"
	// Audit lets it through, and logs and counts it.
	Audit RequestMode = "audit"
)

// Path match types, as in Gateway API.
const (
	PathExact  = "Exact"
	PathPrefix = "PathPrefix"
)

// Reasons of a Decision; each is a bounded metric label.
const (
	ReasonAllowed      = "allowed"
	ReasonPeerNotNamed = "peer_not_named" // no rule's from names the peer
	ReasonHost         = "host_not_allowed"
	ReasonMethod       = "method_not_allowed"
	ReasonPath         = "path_not_allowed"
	ReasonGRPCMethod   = "grpc_method_not_allowed"
	ReasonNotGRPC      = "not_grpc" // a grpc match, and the request is not a gRPC call
)

// Request is what a request rule looks at.
type Request struct {
	// Peer is the verified SPIFFE ID of the caller; zero for plain TCP.
	Peer spiffeid.ID
	// Method is the HTTP method, as sent.
	Method string
	// Path is the path as NormalizePath returns it.
	Path string
	// Host is the Host or :authority as NormalizeHost returns it.
	Host string
	// GRPC says the request is a gRPC call (content-type application/grpc).
	GRPC bool
}

// Decision is the verdict of a port's request rules on one request.
type Decision struct {
	// Allowed says the request may go to the app: a rule allows it, the
	// port has no request rules, or it was denied in audit mode.
	Allowed bool
	// Audited says the rules deny the request and audit mode let it through.
	Audited bool
	// Policy and Rule name the rule that decided: the one that allowed,
	// or the first that names the peer and did not (Rule is empty when
	// none names the peer; Policy is then the port's first rule's).
	Policy, Rule string
	// Reason is ReasonAllowed, or why the deciding rule did not match.
	Reason string
}

// HasRequestRules reports whether the port's traffic must be parsed as
// HTTP to enforce its policy.
func (p *Port) HasRequestRules() bool { return len(p.requests) > 0 }

// Decide applies the port's request rules to r. Among the rules whose
// from names the peer (or that name no peer), the first that matches
// allows; when none does, the request is denied, or only audited when
// every such rule is in audit mode. A peer no rule names is denied, or
// audited when every rule of the port is in audit mode. A port without
// request rules allows everything its connection rules admitted. Decide
// does not allocate.
func (p *Port) Decide(r *Request) Decision {
	if len(p.requests) == 0 {
		return Decision{Allowed: true, Reason: ReasonAllowed}
	}
	first, reason, named, audit := -1, "", false, true
	for i := range p.requests {
		rr := &p.requests[i]
		if !rr.applies(r.Peer) {
			continue
		}
		named = true
		why := rr.match(r)
		if why == "" {
			return Decision{Allowed: true, Policy: rr.policy, Rule: rr.name, Reason: ReasonAllowed}
		}
		if first < 0 {
			first, reason = i, why
		}
		audit = audit && rr.audit
	}
	var d Decision
	if named {
		d = Decision{Policy: p.requests[first].policy, Rule: p.requests[first].name, Reason: reason}
	} else {
		for i := range p.requests {
			audit = audit && p.requests[i].audit
		}
		d = Decision{Policy: p.requests[0].policy, Reason: ReasonPeerNotNamed}
	}
	d.Audited, d.Allowed = audit, audit
	return d
}

// requestRule is a compiled RequestRule.
type requestRule struct {
	policy, name string
	audit        bool
	anyPeer      bool // from is empty
	from         peers
	hosts        []string // exact names, or ".suffix" for *.suffix
	matches      []requestMatch
}

type requestMatch struct {
	method     string
	pathType   string // "", PathExact, PathPrefix
	path       string // a PathPrefix without its trailing slash ("" for /)
	grpc       bool
	service    []string // segments; nil means any
	grpcMethod string   // "" means any
}

func (rr *requestRule) applies(peer spiffeid.ID) bool {
	if rr.anyPeer {
		return true
	}
	return !peer.IsZero() && rr.from.allows(peer)
}

// match returns "" when r matches, else the reason it does not.
func (rr *requestRule) match(r *Request) string {
	if len(rr.hosts) > 0 && !matchHost(rr.hosts, r.Host) {
		return ReasonHost
	}
	if len(rr.matches) == 0 {
		return ""
	}
	reason := ""
	for i := range rr.matches {
		why := rr.matches[i].match(r)
		if why == "" {
			return ""
		}
		if reason == "" {
			reason = why
		}
	}
	return reason
}

func matchHost(hosts []string, h string) bool {
	for _, want := range hosts {
		if want[0] == '.' {
			if len(h) > len(want) && strings.HasSuffix(h, want) {
				return true
			}
		} else if h == want {
			return true
		}
	}
	return false
}

func (m *requestMatch) match(r *Request) string {
	if m.grpc {
		if !r.GRPC {
			return ReasonNotGRPC
		}
		if !m.matchGRPC(r.Path) {
			return ReasonGRPCMethod
		}
		return ""
	}
	if m.method != "" && r.Method != m.method {
		return ReasonMethod
	}
	switch m.pathType {
	case PathExact:
		if r.Path != m.path {
			return ReasonPath
		}
	case PathPrefix:
		rest, ok := strings.CutPrefix(r.Path, m.path)
		if !ok || rest != "" && rest[0] != '/' {
			return ReasonPath
		}
	}
	return ""
}

// matchGRPC matches a gRPC path, /SERVICE/METHOD.
func (m *requestMatch) matchGRPC(p string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !ok || svc == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return false
	}
	if m.grpcMethod != "" && m.grpcMethod != "*" && m.grpcMethod != method {
		return false
	}
	if m.service == nil {
		return true
	}
	for i, want := range m.service {
		seg, rest, more := strings.Cut(svc, ".")
		if seg == "" || want != "*" && want != seg {
			return false
		}
		if more != (i < len(m.service)-1) {
			return false
		}
		svc = rest
	}
	return true
}

// compileRequests checks and compiles the request rules of a port.
func (p *Port) compileRequests(rules []RequestRule, where string) error {
	names := map[[2]string]bool{}
	for i, r := range rules {
		rw := fmt.Sprintf("%s requests[%d]", where, i)
		if r.Name != "" {
			rw = fmt.Sprintf("%s (rule %s)", rw, r.Name)
		}
		rr, err := p.compileRequest(r, rw)
		if err != nil {
			return err
		}
		key := [2]string{r.Policy, r.Name}
		if names[key] {
			return fmt.Errorf("%w: %s: the rule name is used twice; rules are told apart by name in metrics and denials", ErrInvalid, rw)
		}
		names[key] = true
		p.requests = append(p.requests, rr)
	}
	return nil
}

func (p *Port) compileRequest(r RequestRule, where string) (requestRule, error) {
	rr := requestRule{policy: r.Policy, name: r.Name, anyPeer: len(r.From) == 0, from: peers{td: p.td, ids: map[spiffeid.ID]bool{}, tds: map[spiffeid.TrustDomain]bool{}}}
	if errs := validation.IsDNS1123Label(r.Name); len(errs) > 0 {
		return rr, fmt.Errorf("%w: %s: name %q: %s", ErrInvalid, where, r.Name, strings.Join(errs, "; "))
	}
	switch RequestMode(r.Mode) {
	case "", Enforce:
	case Audit:
		rr.audit = true
	default:
		return rr, fmt.Errorf("%w: %s: unknown mode %q; use %s or %s", ErrInvalid, where, r.Mode, Enforce, Audit)
	}
	for j, f := range r.From {
		if err := rr.from.add(f, fmt.Sprintf("%s from[%d]", where, j)); err != nil {
			return rr, err
		}
	}
	for j, h := range r.Hosts {
		name, wild := strings.CutPrefix(h, "*.")
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return rr, fmt.Errorf("%w: %s hosts[%d]: %q is not a lower-case DNS name or *.NAME, without port or trailing dot: %s", ErrInvalid, where, j, h, strings.Join(errs, "; "))
		}
		if wild {
			name = "." + name
		}
		rr.hosts = append(rr.hosts, name)
	}
	for j, m := range r.Matches {
		cm, err := compileMatch(m, fmt.Sprintf("%s matches[%d]", where, j))
		if err != nil {
			return rr, err
		}
		rr.matches = append(rr.matches, cm)
	}
	return rr, nil
}

func compileMatch(m v1alpha1.RequestMatch, where string) (requestMatch, error) {
	var cm requestMatch
	if m.GRPC != nil {
		if m.Method != "" || m.Path != nil {
			return cm, fmt.Errorf("%w: %s: grpc excludes method and path (a gRPC call is a POST to /SERVICE/METHOD)", ErrInvalid, where)
		}
		cm.grpc = true
		if s := m.GRPC.Service; s != "" && s != "*" {
			for seg := range strings.SplitSeq(s, ".") {
				if seg != "*" && !isIdent(seg) {
					return cm, fmt.Errorf("%w: %s: grpc service %q: each dot-separated segment is an identifier or *", ErrInvalid, where, s)
				}
				cm.service = append(cm.service, seg)
			}
		}
		if mm := m.GRPC.Method; mm != "" && mm != "*" && !isIdent(mm) {
			return cm, fmt.Errorf("%w: %s: grpc method %q is not an identifier or *", ErrInvalid, where, mm)
		}
		cm.grpcMethod = m.GRPC.Method
		return cm, nil
	}
	if m.Method != "" && !isMethod(m.Method) {
		return cm, fmt.Errorf("%w: %s: method %q: an HTTP method is upper-case letters (GET, POST, ...), matched exactly", ErrInvalid, where, m.Method)
	}
	cm.method = m.Method
	if m.Path != nil {
		switch m.Path.Type {
		case "", PathPrefix:
			cm.pathType = PathPrefix
		case PathExact:
			cm.pathType = PathExact
		default:
			return cm, fmt.Errorf("%w: %s: path type %q: use %s or %s", ErrInvalid, where, m.Path.Type, PathExact, PathPrefix)
		}
		norm, err := NormalizePath(m.Path.Value)
		if err != nil {
			return cm, fmt.Errorf("%w: %s: %w", ErrInvalid, where, err)
		}
		if norm != m.Path.Value {
			return cm, fmt.Errorf("%w: %s: path %q is not normalised; write it as %q, the form requests are matched in", ErrInvalid, where, m.Path.Value, norm)
		}
		cm.path = norm
		if cm.pathType == PathPrefix {
			cm.path = strings.TrimSuffix(norm, "/")
		}
	}
	return cm, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isMethod(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
