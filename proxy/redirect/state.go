package redirect

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// ErrMissing means the namespace holds no meshid table: nothing is
// redirected.
var ErrMissing = errors.New("redirect: the nftables table inet " + Table + " is missing: nothing is redirected to the proxy")

// State is what meshid-init programmed and then read back from the kernel,
// written to a file the proxy reads (StateFile): reading nftables takes
// CAP_NET_ADMIN, which meshid-init holds and the proxy does not, so the
// proxy reports what meshid-init saw when it ran, not the kernel's present
// rules.
type State struct {
	Table             string    `json:"table"`
	InboundPort       uint16    `json:"inbound_port"`
	OutboundPort      uint16    `json:"outbound_port"`
	AdminPort         uint16    `json:"admin_port"`
	ProxyUID          uint32    `json:"proxy_uid"`
	SkipInboundPorts  []uint16  `json:"skip_inbound_ports"`
	SkipOutboundPorts []uint16  `json:"skip_outbound_ports"`
	SkipOutboundCIDRs []string  `json:"skip_outbound_cidrs"`
	Rules             []string  `json:"rules"`
	CheckedAt         time.Time `json:"checked_at"`
	// Present: the table was found when read back; Matching: its chains
	// and rules are, expression by expression, those of Rules.
	Present  bool `json:"present"`
	Matching bool `json:"matching"`
	// Problem says what Verify found wrong; empty when Matching.
	Problem string `json:"problem,omitempty"`
}

// NewState describes cfg's rule set and what Verify said of it (verr) at
// now.
func NewState(cfg Config, verr error, now time.Time) State {
	cfg = cfg.withDefaults()
	s := State{
		Table: Table, InboundPort: cfg.InboundPort, OutboundPort: cfg.OutboundPort, AdminPort: cfg.AdminPort, ProxyUID: cfg.ProxyUID,
		SkipInboundPorts: unique(cfg.SkipInboundPorts), SkipOutboundPorts: unique(cfg.SkipOutboundPorts),
		SkipOutboundCIDRs: []string{}, CheckedAt: now.UTC(),
		Present: !errors.Is(verr, ErrMissing), Matching: verr == nil,
	}
	for _, p := range cfg.SkipOutboundCIDRs {
		s.SkipOutboundCIDRs = append(s.SkipOutboundCIDRs, p.Masked().String())
	}
	for _, r := range Rules(cfg) {
		s.Rules = append(s.Rules, r.String())
	}
	if verr != nil {
		s.Problem = verr.Error()
	}
	return s
}

// Config is the rule set s describes.
func (s State) Config() (Config, error) {
	cfg := Config{InboundPort: s.InboundPort, OutboundPort: s.OutboundPort, AdminPort: s.AdminPort, ProxyUID: s.ProxyUID,
		SkipInboundPorts: s.SkipInboundPorts, SkipOutboundPorts: s.SkipOutboundPorts}
	for _, c := range s.SkipOutboundCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return Config{}, fmt.Errorf("redirect: state: CIDR %q: %w", c, err)
		}
		cfg.SkipOutboundCIDRs = append(cfg.SkipOutboundCIDRs, p)
	}
	return cfg, cfg.Validate()
}

// WriteState writes s to path (0644: it holds no secret, and the proxy
// runs as another user), replacing the file in one rename.
func WriteState(path string, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("redirect: write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("redirect: write state: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("redirect: write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("redirect: write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("redirect: write state: %w", err)
	}
	return nil
}

// ReadState reads what WriteState wrote; a missing file is ErrMissing
// (meshid-init did not run, or ran without --state-file).
func ReadState(path string) (State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, fmt.Errorf("%w (no state file %s: meshid-init did not run with --state-file there)", ErrMissing, path)
	}
	if err != nil {
		return State{}, fmt.Errorf("redirect: read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("redirect: state file %s: %w", path, err)
	}
	return s, nil
}
