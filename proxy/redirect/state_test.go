package redirect_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/meshid/meshid/proxy/redirect"
)

// TestState: what meshid-init writes, the proxy reads back as the same
// rule set; a missing file is ErrMissing, and so is a table Verify did not
// find (present false).
func TestState(t *testing.T) {
	cfg := redirect.Config{SkipInboundPorts: []uint16{9200, 9100}, SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}}
	path := filepath.Join(t.TempDir(), "state.json")
	if _, err := redirect.ReadState(path); !errors.Is(err, redirect.ErrMissing) {
		t.Fatalf("ReadState of no file: %v, want ErrMissing", err)
	}
	at := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	if err := redirect.WriteState(path, redirect.NewState(cfg, nil, at)); err != nil {
		t.Fatal(err)
	}
	s, err := redirect.ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Present || !s.Matching || s.Problem != "" || !s.CheckedAt.Equal(at) || s.InboundPort != redirect.DefaultInboundPort || len(s.Rules) != len(redirect.Rules(cfg)) {
		t.Errorf("state %+v", s)
	}
	back, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(redirect.Rules(back), redirect.Rules(cfg)) {
		t.Errorf("the state's rule set differs:\n%v\nwant\n%v", redirect.Rules(back), redirect.Rules(cfg))
	}
	missing := redirect.NewState(cfg, redirect.ErrMissing, at)
	if missing.Present || missing.Matching || missing.Problem == "" {
		t.Errorf("state of a missing table %+v", missing)
	}
	differs := redirect.NewState(cfg, errors.New("redirect: chain output holds 0 rules, want 5"), at)
	if !differs.Present || differs.Matching {
		t.Errorf("state of a changed table %+v", differs)
	}
}
