package test_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// clockReads are the package time functions that read or wait on the wall
// clock. Product code takes a k8s.io/utils/clock instead (Config.Clock,
// nil meaning clock.RealClock{}), so tests can drive it.
var clockReads = map[string]bool{"Now": true, "After": true, "NewTicker": true, "NewTimer": true, "Tick": true, "Sleep": true}

// clockAllowed are the files that must use the wall clock, with how many
// uses each has (one more fails) and why.
var clockAllowed = map[string]struct {
	uses int
	why  string
}{
	// A net.Conn deadline is an absolute time the runtime compares with
	// the wall clock, so it must come from the wall clock; the idle marks
	// in pipe.go are compared with those deadlines.
	"proxy/listener.go":                    {1, "handshake deadline"},
	"proxy/transparent.go":                 {1, "handshake deadline"},
	"proxy/sniff.go":                       {1, "read deadline of the first bytes"},
	"proxy/requests.go":                    {1, "read deadline of the HTTP/2 preface"},
	"proxy/pipe.go":                        {3, "idle read deadlines and the last-traffic mark"},
	"cmd/meshid/internal/verify/verify.go": {1, "read deadline of the probe"},
	// CAParams documents that a zero NotBefore means now, for callers with
	// no clock of their own (the benchmark); every product caller passes
	// its clock's time.
	"issuer/generate.go": {1, "CAParams' zero NotBefore"},
}

// TestOneClock fails if a non-test, non-main Go file outside test/ reads
// the wall clock through package time instead of an injected clock (test
// helpers, isHelper, are test code).
func TestOneClock(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Name,Dir,GoFiles,IgnoredGoFiles", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type listed struct {
		ImportPath, Name, Dir   string
		GoFiles, IgnoredGoFiles []string
	}
	var pkgs []listed
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	seen := map[string]int{}
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		if p.Name == "main" || under(from, "test") || isHelper(from) {
			continue
		}
		for _, name := range append(p.GoFiles, p.IgnoredGoFiles...) {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			path := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			file := strings.TrimPrefix(from+"/"+name, "/")
			uses := clockUses(f)
			seen[file] = len(uses)
			if a, ok := clockAllowed[file]; ok && len(uses) == a.uses {
				continue
			}
			for _, u := range uses {
				t.Errorf("%s uses %s: take a k8s.io/utils/clock (Config.Clock, nil meaning clock.RealClock{}) so tests can drive it, or add the file to clockAllowed saying why it must read the wall clock", file, u)
			}
		}
	}
	for file, a := range clockAllowed {
		if n, ok := seen[file]; !ok || n != a.uses {
			t.Errorf("clockAllowed says %s uses the wall clock %d times (%s), but it does %d times: update the list", file, a.uses, a.why, n)
		}
	}
}

// clockUses returns every time.Now, time.After... (clockReads) in f, called
// or not, under whatever name f imports package time.
func clockUses(f *ast.File) []string {
	names := map[string]bool{}
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "time" {
			name := "time"
			if imp.Name != nil {
				name = imp.Name.Name
			}
			names[name] = true
		}
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); ok && names[x.Name] && clockReads[sel.Sel.Name] {
			out = append(out, "time."+sel.Sel.Name)
		}
		return true
	})
	return out
}

// TestClockUses: the check finds the wall clock however it is reached, and
// nothing else.
func TestClockUses(t *testing.T) {
	tests := []struct {
		name, src string
		want      int
	}{
		{name: "a call", src: `import "time"; func f() { _ = time.Now() }`, want: 1},
		{name: "a function value", src: `import "time"; var now = time.Now`, want: 1},
		{name: "every waiting kind", src: `import "time"; func f() { <-time.After(1); time.NewTicker(1); time.NewTimer(1); time.Tick(1); time.Sleep(1) }`, want: 5},
		{name: "a renamed import", src: `import stdtime "time"; func f() { _ = stdtime.Now() }`, want: 1},
		{name: "an injected clock", src: `import "k8s.io/utils/clock"; func f(c clock.Clock) { _ = c.Now(); <-c.After(1) }`},
		{name: "a field named time", src: `type s struct{ time interface{ Now() int } }; func (x s) f() int { return x.time.Now() }`},
		{name: "durations and Since", src: `import "time"; func f(t time.Time) time.Duration { return time.Since(t) + time.Second }`},
		{name: "in a comment", src: "import \"time\"\n// time.Now()\nvar d time.Duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parser.ParseFile(token.NewFileSet(), "x.go", "package x; "+tt.src, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if got := clockUses(f); len(got) != tt.want {
				t.Fatalf("clockUses = %q; want %d", got, tt.want)
			}
		})
	}
}
