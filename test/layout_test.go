package test_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/meshid/meshid"

// shared are the nouns at the bottom of the layout (docs/architecture.md):
// everything may import them, and they import only each other.
var shared = []string{"api", "bundle", "identity", "policy", "poll"}

// may lists, by folder (the package and every one below it), which meshid
// packages a package may import besides shared nouns and its own folder;
// the first match wins. cmd/ and test/ are on top and may import anything
// (but nothing outside test/ may import test/).
var may = []struct {
	dir     string
	imports []string
}{
	{"api", nil},
	{"bundle", nil},
	{"identity", nil},
	{"policy", nil},
	{"poll", nil},
	{"issuer", nil},
	{"ca", []string{"issuer"}},
	{"webhooks", []string{"issuer"}},
	{"proxy", []string{"issuer", "rotation"}},
	{"rotation/anchor", []string{"issuer", "rotation/health", "ca/fleet", "ca/manifest"}},
	{"rotation", []string{"issuer"}},
	{"cmd", []string{""}},
	{"test", []string{""}},
}

// siblings never depend on each other, not even through a third package.
var siblings = []string{"ca", "proxy", "webhooks"}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

// TestImportDirection fails on any import that runs against the layout:
// a back edge (a shared noun importing issuer/, ca/ importing rotation/),
// a sibling importing another, or anything but test/ importing test/.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports,Deps", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := decode(t, out)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		allowed, ok := rule(from)
		if !ok {
			t.Errorf("%s: no rule says what it may import; add it to the layout (docs/architecture.md) and to this test", from)
			continue
		}
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			to, ours := strings.CutPrefix(imp, module+"/")
			if !ours || under(to, own(from)) {
				continue
			}
			if under(to, "test") && !under(from, "test") {
				t.Errorf("%s imports %s: only test/ may import the test harness", from, to)
				continue
			}
			if !isShared(to) && !matchesAny(to, allowed) {
				t.Errorf("%s imports %s, against the layout: it may import only shared nouns %v and %v", from, to, shared, allowed)
			}
		}
		for _, s := range siblings {
			if !under(from, s) {
				continue
			}
			for _, d := range p.Deps {
				to := rel(d)
				for _, other := range siblings {
					if other != s && under(to, other) {
						t.Errorf("%s depends on %s (through its imports): %v never depend on each other", from, to, siblings)
					}
				}
			}
		}
	}
}

func decode(t *testing.T, out []byte) []pkg {
	t.Helper()
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			return pkgs
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
}

func rel(path string) string {
	if path == module {
		return ""
	}
	return strings.TrimPrefix(path, module+"/")
}

// under reports whether path is dir or a package below it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func isShared(path string) bool {
	for _, s := range shared {
		if under(path, s) {
			return true
		}
	}
	return false
}

func rule(from string) ([]string, bool) {
	for _, r := range may {
		if under(from, r.dir) {
			return r.imports, true
		}
	}
	return nil, false
}

// own is the folder a package belongs to, for the imports within it.
func own(from string) string {
	for _, r := range may {
		if under(from, r.dir) {
			return r.dir
		}
	}
	return from
}

func matchesAny(to string, allowed []string) bool {
	for _, a := range allowed {
		if a == "" || under(to, a) {
			return true
		}
	}
	return false
}
