package test_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/meshid/meshid"

// shared are the nouns at the bottom of the layout (docs/architecture.md):
// everything may import them, and they import only each other.
var shared = []string{"api", "bundle", "identity", "policy", "poll", "sidecar"}

// may lists, by folder (the package and every one below it), which meshid
// packages a package may import besides shared nouns and its own folder;
// the first match wins. cmd/ and test/ are on top and may import anything
// (but nothing outside test/ may import test/). Test helpers (isHelper)
// have rules of their own.
var may = []struct {
	dir     string
	imports []string
}{
	{"api", nil},
	{"bundle", nil},
	{"identity", nil},
	{"policy", nil},
	{"poll", nil},
	{"sidecar", nil},
	{"issuer", nil},
	{"ca", []string{"issuer"}},
	{"webhooks", []string{"issuer"}},
	{"proxy", []string{"issuer", "rotation"}},
	{"rotation/anchor", []string{"issuer", "rotation/health", "ca/fleet", "ca/manifest"}},
	{"rotation/health", []string{"issuer", "ca/fleet"}},
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
// a sibling importing another, anything but test/ importing test/, or a
// test helper imported outside tests or importing above issuer/.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports,Deps", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := decode(t, out)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	for _, msg := range violations(pkgs) {
		t.Error(msg)
	}
}

// violations returns what runs against the layout in pkgs, one message
// per import.
func violations(pkgs []pkg) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		allowed, ok := rule(from)
		if !ok {
			bad("%s: no rule says what it may import; add it to the layout (docs/architecture.md) and to this test", from)
			continue
		}
		if isSharedHelper(from) {
			for _, imp := range p.Imports {
				if to, ours := strings.CutPrefix(imp, module+"/"); ours && !isShared(to) && !under(to, "issuer") {
					bad("%s imports %s: a test helper may import only issuer and shared nouns %v", from, to, shared)
				}
			}
		}
		inTests := len(p.Imports)
		for i, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			to, ours := strings.CutPrefix(imp, module+"/")
			if !ours {
				continue
			}
			if isHelper(to) && i < inTests && !under(from, "test") && !isHelper(from) {
				bad("%s imports the test helper %s outside its _test.go files: only tests (and test/) may", from, to)
				continue
			}
			if under(to, own(from)) || i < inTests && isSharedHelper(from) { // a shared helper's own imports: checked above
				continue
			}
			if under(to, "test") && !under(from, "test") {
				bad("%s imports %s: only test/ may import the test harness", from, to)
				continue
			}
			if isSharedHelper(to) {
				continue
			}
			if !isShared(to) && !matchesAny(to, allowed) {
				bad("%s imports %s, against the layout: it may import only shared nouns %v and %v", from, to, shared, allowed)
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
						bad("%s depends on %s (through its imports): %v never depend on each other", from, to, siblings)
					}
				}
			}
		}
	}
	return out
}

// isHelper reports whether path is a test-helper package, named like
// net/http/httptest: its last element ends in "test" (issuer/issuertest).
// Only _test.go files, test/ and other helpers may import one; the harness
// under test/ is not one.
func isHelper(path string) bool {
	last := path[strings.LastIndex(path, "/")+1:]
	return !under(path, "test") && len(last) > len("test") && strings.HasSuffix(last, "test")
}

// isSharedHelper reports whether path is a test helper below cmd/: it may
// import only issuer and shared nouns, so any package's tests may import
// it. A helper under cmd/ (cmd/meshid/internal/catest runs a ca.Server)
// is cmd's, and imports and is imported by cmd's rule.
func isSharedHelper(path string) bool { return isHelper(path) && !under(path, "cmd") }

// TestViolations: the rules catch each kind of wrong edge, and let test
// helpers through only where they belong.
func TestViolations(t *testing.T) {
	tests := []struct {
		name string
		pkg  pkg
		want string // a part of the one message expected; empty: none
	}{
		{name: "shared noun imports issuer", pkg: pkg{ImportPath: "bundle", Imports: []string{"issuer"}}, want: "bundle imports issuer, against the layout"},
		{name: "shared noun's test imports issuer", pkg: pkg{ImportPath: "bundle", XTestImports: []string{"issuer"}}, want: "bundle imports issuer, against the layout"},
		{name: "shared noun's test imports a test helper", pkg: pkg{ImportPath: "bundle", XTestImports: []string{"issuer/issuertest"}}},
		{name: "in-package test imports a test helper", pkg: pkg{ImportPath: "policy", TestImports: []string{"issuer/issuertest"}}},
		{name: "shared noun imports a test helper", pkg: pkg{ImportPath: "bundle", Imports: []string{"issuer/issuertest"}}, want: "outside its _test.go files"},
		{name: "command imports a test helper", pkg: pkg{ImportPath: "cmd/meshid", Imports: []string{"issuer/issuertest"}}, want: "outside its _test.go files"},
		{name: "the harness imports a test helper", pkg: pkg{ImportPath: "test/cluster", Imports: []string{"issuer/issuertest"}}},
		{name: "test helper imports issuer and shared nouns", pkg: pkg{ImportPath: "issuer/issuertest", Imports: []string{"issuer", "bundle", "identity"}}},
		{name: "test helper imports ca", pkg: pkg{ImportPath: "issuer/issuertest", Imports: []string{"ca/trust"}}, want: "a test helper may import only issuer"},
		{name: "test helper under ca imports ca", pkg: pkg{ImportPath: "ca/trust/trusttest", Imports: []string{"ca/trust"}}, want: "a test helper may import only issuer"},
		{name: "test helper imports another test helper", pkg: pkg{ImportPath: "ca/trust/trusttest", Imports: []string{"issuer/issuertest"}}},
		{name: "command's test helper imports ca", pkg: pkg{ImportPath: "cmd/meshid/internal/catest", Imports: []string{"ca", "cmd/meshid/internal/pkitest"}}},
		{name: "command's test imports its test helper", pkg: pkg{ImportPath: "cmd/meshid/internal/verify", XTestImports: []string{"cmd/meshid/internal/catest"}}},
		{name: "command imports its test helper", pkg: pkg{ImportPath: "cmd/meshid/internal/verify", Imports: []string{"cmd/meshid/internal/catest"}}, want: "outside its _test.go files"},
		{name: "shared noun's test imports a command's test helper", pkg: pkg{ImportPath: "bundle", XTestImports: []string{"cmd/meshid/internal/catest"}}, want: "bundle imports cmd/meshid/internal/catest, against the layout"},
		{name: "issuer imports ca", pkg: pkg{ImportPath: "issuer", Imports: []string{"ca"}}, want: "issuer imports ca, against the layout"},
		{name: "ca's test imports rotation", pkg: pkg{ImportPath: "ca", XTestImports: []string{"rotation"}}, want: "ca imports rotation, against the layout"},
		{name: "proxy depends on ca", pkg: pkg{ImportPath: "proxy", Deps: []string{"ca/trust"}}, want: "proxy depends on ca/trust"},
		{name: "ca imports the harness", pkg: pkg{ImportPath: "ca", XTestImports: []string{"test/cluster"}}, want: "only test/ may import the test harness"},
		{name: "ca imports its own folder", pkg: pkg{ImportPath: "ca", Imports: []string{"ca/trust", "issuer"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pkg
			abs := func(paths []string) []string {
				out := make([]string, len(paths))
				for i, path := range paths {
					out[i] = module + "/" + path
				}
				return out
			}
			p.ImportPath = module + "/" + p.ImportPath
			p.Imports, p.TestImports, p.XTestImports, p.Deps = abs(p.Imports), abs(p.TestImports), abs(p.XTestImports), abs(p.Deps)
			got := violations([]pkg{p})
			switch {
			case tt.want == "" && len(got) != 0:
				t.Fatalf("violations = %q; want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Fatalf("violations = %q; want one with %q", got, tt.want)
			}
		})
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
