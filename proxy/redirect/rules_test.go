package redirect_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshid/meshid/proxy/redirect"
)

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  redirect.Config
		want []string
	}{
		{"defaults", redirect.Config{}, []string{
			`prerouting: iifname "lo" return`,
			`prerouting: tcp dport 15000 return`,
			`prerouting: meta l4proto tcp redirect to :15006`,
			`output: oifname "lo" return`,
			`output: meta skuid 65532 return`,
			`output: meta l4proto tcp redirect to :15001`,
		}},
		{"skips, deduplicated and masked", redirect.Config{
			InboundPort: 7006, OutboundPort: 7001, AdminPort: 7000, ProxyUID: 1337,
			SkipInboundPorts:  []uint16{9100, 22, 9100},
			SkipOutboundPorts: []uint16{5432},
			SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("fd00::1/16")},
		}, []string{
			`prerouting: iifname "lo" return`,
			`prerouting: tcp dport 22 return`,
			`prerouting: tcp dport 7000 return`,
			`prerouting: tcp dport 9100 return`,
			`prerouting: meta l4proto tcp redirect to :7006`,
			`output: oifname "lo" return`,
			`output: meta skuid 1337 return`,
			`output: tcp dport 5432 return`,
			`output: ip daddr 10.0.0.0/8 return`,
			`output: ip6 daddr fd00::/16 return`,
			`output: meta l4proto tcp redirect to :7001`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range redirect.Rules(tc.cfg) {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  redirect.Config
		want string // in the error; empty means valid
	}{
		{"zero is the defaults", redirect.Config{}, ""},
		{"inbound is the admin port", redirect.Config{InboundPort: 15000}, "must differ"},
		{"outbound is the inbound port", redirect.Config{InboundPort: 9, OutboundPort: 9}, "must differ"},
		{"port zero skipped", redirect.Config{SkipOutboundPorts: []uint16{0}}, "port 0"},
		{"invalid prefix", redirect.Config{SkipOutboundCIDRs: []netip.Prefix{{}}}, "invalid CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	ports, err := redirect.ParsePorts(" 80, 8080 ,,")
	if err != nil || !slices.Equal(ports, []uint16{80, 8080}) {
		t.Errorf("ParsePorts = %v, %v", ports, err)
	}
	for _, bad := range []string{"0", "65536", "http", "-1"} {
		if _, err := redirect.ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
	cidrs, err := redirect.ParseCIDRs("169.254.169.254, 10.0.0.1/8, ::1")
	want := []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if err != nil || !slices.Equal(cidrs, want) {
		t.Errorf("ParseCIDRs = %v, %v; want %v", cidrs, err, want)
	}
	if _, err := redirect.ParseCIDRs("10.0.0.0/33"); err == nil {
		t.Error("ParseCIDRs accepted /33")
	}
}

func FuzzParsePorts(f *testing.F) {
	f.Add("80,8080")
	f.Add(" 1 , 65535,")
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := redirect.ParsePorts(s)
		if err != nil {
			return
		}
		for _, p := range ports {
			if p == 0 {
				t.Fatalf("ParsePorts(%q) returned port 0", s)
			}
		}
	})
}
