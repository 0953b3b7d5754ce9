package test_test

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestMakeTargetsDocumented: `make help` and the README's table of make
// targets list the same targets.
func TestMakeTargetsDocumented(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make on this machine")
	}
	cmd := exec.Command("make", "--no-print-directory", "help")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make help: %v", err)
	}
	var help []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			help = append(help, f[0])
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := readmeTargets(t, string(readme))
	slices.Sort(help)
	slices.Sort(documented)
	if !slices.Equal(help, documented) {
		t.Fatalf("make help lists %q,\nthe README's make-targets table %q", help, documented)
	}
}

// readmeTargets are the targets named in the first cell of each row of the
// table under "## Make targets": `make build`, or `make generate` /
// `generate-check` for two.
func readmeTargets(t *testing.T, readme string) []string {
	_, section, ok := strings.Cut(readme, "\n## Make targets\n")
	if !ok {
		t.Fatal("README.md has no ## Make targets section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	code := regexp.MustCompile("`(?:make )?([a-z-]+)`")
	var targets []string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.TrimSpace(cells[1]) == "target" || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			targets = append(targets, m[1])
		}
	}
	if len(targets) == 0 {
		t.Fatal("the README's make-targets table names no target")
	}
	return targets
}
