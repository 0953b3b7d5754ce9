package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshid/meshid/sidecar"
)

// Defaults for Config.
const (
	DefaultInboundPort  = 15006
	DefaultOutboundPort = 15001
	// Table is the name of the nftables table (family inet) that holds the
	// whole rule set; nothing else in the namespace is touched.
	Table = "meshid"
)

// Chains of the table, named after their hooks.
const (
	Prerouting = "prerouting" // inbound: connections from other hosts
	Output     = "output"     // outbound: connections this pod opens
)

// Config is what is redirected where.
type Config struct {
	// InboundPort is the proxy's transparent inbound listener; 0 means
	// DefaultInboundPort.
	InboundPort uint16
	// OutboundPort is the proxy's transparent outbound listener (it must
	// listen on loopback); 0 means DefaultOutboundPort.
	OutboundPort uint16
	// AdminPort is the proxy's admin port (probes, metrics): it is never
	// redirected. 0 means sidecar.AdminPort.
	AdminPort uint16
	// ProxyUID is the user the proxy runs as: its connections are never
	// redirected (they would loop). 0 means sidecar.ProxyUID; the proxy
	// never runs as root.
	ProxyUID uint32
	// SkipInboundPorts reach the app directly, in plain; nil means none.
	SkipInboundPorts []uint16
	// SkipOutboundPorts and SkipOutboundCIDRs leave the pod without the
	// proxy; nil means none.
	SkipOutboundPorts []uint16
	SkipOutboundCIDRs []netip.Prefix
}

func (c Config) withDefaults() Config {
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.AdminPort == 0 {
		c.AdminPort = sidecar.AdminPort
	}
	if c.ProxyUID == 0 {
		c.ProxyUID = sidecar.ProxyUID
	}
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.InboundPort == c.OutboundPort || c.InboundPort == c.AdminPort || c.OutboundPort == c.AdminPort {
		errs = append(errs, fmt.Errorf("redirect: the inbound (%d), outbound (%d) and admin (%d) ports must differ", c.InboundPort, c.OutboundPort, c.AdminPort))
	}
	for _, p := range slices.Concat(c.SkipInboundPorts, c.SkipOutboundPorts) {
		if p == 0 {
			errs = append(errs, errors.New("redirect: port 0 cannot be skipped; list ports 1-65535"))
		}
	}
	for _, p := range c.SkipOutboundCIDRs {
		if !p.IsValid() {
			errs = append(errs, errors.New("redirect: an invalid CIDR was given to skip"))
		}
	}
	return errors.Join(errs...)
}

// Rule is one rule of the rule set: every match must hold, then the
// verdict applies. String prints it as nft(8) does.
type Rule struct {
	Chain   string
	Matches []Match
	// RedirectTo is the local port the connection is sent to; 0 means
	// return (leave the connection alone).
	RedirectTo uint16
}

func (r Rule) String() string {
	var parts []string
	for _, m := range r.Matches {
		parts = append(parts, m.String())
	}
	if r.RedirectTo == 0 {
		parts = append(parts, "return")
	} else {
		parts = append(parts, "meta l4proto tcp redirect to :"+strconv.Itoa(int(r.RedirectTo)))
	}
	return r.Chain + ": " + strings.Join(parts, " ")
}

// Match is one condition of a rule; exactly one field is set.
type Match struct {
	// InputInterface, OutputInterface: the connection's interface name.
	InputInterface, OutputInterface string
	// SocketUID: the user that owns the connection's socket.
	SocketUID *uint32
	// DestPort: a TCP destination port.
	DestPort uint16
	// DestPrefix: the destination address is in this prefix.
	DestPrefix netip.Prefix
}

func (m Match) String() string {
	switch {
	case m.InputInterface != "":
		return fmt.Sprintf("iifname %q", m.InputInterface)
	case m.OutputInterface != "":
		return fmt.Sprintf("oifname %q", m.OutputInterface)
	case m.SocketUID != nil:
		return "meta skuid " + strconv.FormatUint(uint64(*m.SocketUID), 10)
	case m.DestPort != 0:
		return "tcp dport " + strconv.Itoa(int(m.DestPort))
	case m.DestPrefix.Addr().Is4():
		return "ip daddr " + m.DestPrefix.String()
	default:
		return "ip6 daddr " + m.DestPrefix.String()
	}
}

// Rules returns the rule set for cfg, chain by chain in order: what is left
// alone first, then the redirect of the remaining TCP.
func Rules(cfg Config) []Rule {
	cfg = cfg.withDefaults()
	var rs []Rule
	ret := func(chain string, m Match) { rs = append(rs, Rule{Chain: chain, Matches: []Match{m}}) }

	ret(Prerouting, Match{InputInterface: "lo"})
	for _, p := range unique(append([]uint16{cfg.AdminPort}, cfg.SkipInboundPorts...)) {
		ret(Prerouting, Match{DestPort: p})
	}
	rs = append(rs, Rule{Chain: Prerouting, RedirectTo: cfg.InboundPort})

	uid := cfg.ProxyUID
	ret(Output, Match{OutputInterface: "lo"}) // loopback, and the pod's own addresses
	ret(Output, Match{SocketUID: &uid})
	for _, p := range unique(cfg.SkipOutboundPorts) {
		ret(Output, Match{DestPort: p})
	}
	for _, p := range cfg.SkipOutboundCIDRs {
		ret(Output, Match{DestPrefix: p.Masked()})
	}
	rs = append(rs, Rule{Chain: Output, RedirectTo: cfg.OutboundPort})
	return rs
}

func unique(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

// ParsePorts parses a comma-separated port list ("8080, 9090"); empty is
// none.
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("redirect: port %q: want a number from 1 to 65535", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseCIDRs parses a comma-separated CIDR list ("10.0.0.0/8, fd00::/8");
// a bare address is a /32 (or /128). Empty is none.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("redirect: CIDR %q: want ADDRESS/BITS, e.g. 10.0.0.0/8", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
