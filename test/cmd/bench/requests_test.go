package main

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/policy"
)

// TestRequestPolicy checks that the bench's policy file is one the proxy
// takes, with the rule that allows the load last.
func TestRequestPolicy(t *testing.T) {
	yaml := requestPolicy(8443, requestRules)
	if _, err := policy.Parse([]byte(yaml), spiffeid.RequireTrustDomainFromString("cluster.local")); err != nil {
		t.Fatalf("policy.Parse refuses the bench's policy: %v\n%s", err, yaml)
	}
	if n := strings.Count(yaml, "- name: "); n != requestRules {
		t.Errorf("%d rules, want %d", n, requestRules)
	}
	if !strings.HasSuffix(yaml, "- name: load\n    matches:\n    - {method: POST, path: {type: Exact, value: /}}\n") {
		t.Errorf("the allowing rule is not last:\n%s", yaml)
	}
}

func TestSplice(t *testing.T) {
	const begin, end = "<!-- b -->", "<!-- e -->"
	section := begin + "\nnew\n" + end + "\n"
	tests := []struct{ name, report, want string }{
		{"replaces", "# x\n" + begin + "\nold\n" + end + "\n## Notes from this run\n", "# x\n" + section + "## Notes from this run\n"},
		{"before the notes", "# x\n## Notes from this run\n- n\n" + handWritten, "# x\n" + section + "\n## Notes from this run\n- n\n" + handWritten},
		{"before the hand-written part", "# x\n" + handWritten + "\ntail", "# x\n" + section + "\n" + handWritten + "\ntail"},
	}
	for _, tt := range tests {
		got, err := splice(tt.report, section, begin, end, "the pair")
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	if _, err := splice("# x\n", section, begin, end, "the pair"); err == nil || !strings.Contains(err.Error(), "no place for the pair") {
		t.Errorf("no place: err %v", err)
	}
	if _, err := splice("# x\n"+handWritten, "", begin, end, "the pair"); err == nil || !strings.Contains(err.Error(), "the pair was not measured") {
		t.Errorf("empty section: err %v", err)
	}
}
