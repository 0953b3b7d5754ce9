// Command gendb builds an offline Go vulnerability database, in the v1
// layout that `govulncheck -db file:///DIR` reads, from a folder of OSV
// JSON entries (data/osv of the golang.org/x/vulndb module):
//
//	DIR/index/db.json       {"modified": ...}
//	DIR/index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}]
//	DIR/index/vulns.json    [{"id", "modified", "aliases"}]
//	DIR/ID/GO-YYYY-NNNN.json
//
// The index files are byte for byte what x/vulndb's own cmd/indexdb writes
// (golang.org/x/vulndb/internal/database), without its dependencies: it is
// run by test/vuln/run.sh, see test/vuln/README.md. The .json.gz copies
// that indexdb also writes are left out: a file:// database is read from the
// .json files only.
//
// Usage: go run ./test/vuln/gendb -osv VULNDB/data/osv -out DIR [-modified RFC3339]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// entry is the part of an OSV entry that the index needs.
type entry struct {
	ID       string   `json:"id"`
	Modified osvTime  `json:"modified"`
	Aliases  []string `json:"aliases"`
	Affected []struct {
		Package struct {
			Name string `json:"name"` // the module path, or "stdlib" / "toolchain"
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced"`
		Fixed      string `json:"fixed"`
	} `json:"events"`
}

// osvTime marshals as RFC 3339 in UTC, like x/vulndb's osv.Time.
type osvTime struct{ time.Time }

func (t osvTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

func (t *osvTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339, s)
	t.Time = v.UTC()
	return err
}

type dbMeta struct {
	Modified osvTime `json:"modified"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type moduleVuln struct {
	ID       string  `json:"id"`
	Modified osvTime `json:"modified"`
	Fixed    string  `json:"fixed,omitempty"`
}

type vuln struct {
	ID       string   `json:"id"`
	Modified osvTime  `json:"modified"`
	Aliases  []string `json:"aliases,omitempty"`
}

func main() {
	osvDir := flag.String("osv", "", "folder of OSV JSON entries (data/osv of golang.org/x/vulndb)")
	out := flag.String("out", "", "folder to write the database to (created)")
	modified := flag.String("modified", "", "RFC 3339 time for index/db.json (default: the newest entry's)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("gendb: ")
	if *osvDir == "" || *out == "" {
		log.Fatal("usage: gendb -osv DIR -out DIR [-modified RFC3339]")
	}
	n, err := build(*osvDir, *out, *modified)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %d entries to %s", n, *out)
}

func build(osvDir, out, modified string) (int, error) {
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no OSV entries in %s", osvDir)
	}
	idDir := filepath.Join(out, "ID")
	indexDir := filepath.Join(out, "index")
	for _, d := range []string{idDir, indexDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
	}

	var meta dbMeta
	modules := map[string]*module{}
	vulns := map[string]*vuln{}
	for _, f := range files {
		if filepath.Base(f) == "index.json" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, fmt.Errorf("%s: %v", f, err)
		}
		if e.ID == "" {
			return 0, fmt.Errorf("%s: no id", f)
		}
		if _, dup := vulns[e.ID]; dup {
			return 0, fmt.Errorf("id %q appears twice", e.ID)
		}
		vulns[e.ID] = &vuln{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases}
		if e.Modified.After(meta.Modified.Time) {
			meta.Modified = e.Modified
		}
		for _, a := range e.Affected {
			m := modules[a.Package.Name]
			if m == nil {
				m = &module{Path: a.Package.Name, Vulns: []moduleVuln{}}
				modules[a.Package.Name] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: latestFixed(a.Ranges)})
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return 0, fmt.Errorf("%s: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(idDir, e.ID+".json"), buf.Bytes(), 0o644); err != nil {
			return 0, err
		}
	}
	if modified != "" {
		t, err := time.Parse(time.RFC3339, modified)
		if err != nil {
			return 0, fmt.Errorf("-modified: %v", err)
		}
		meta.Modified = osvTime{t.UTC()}
	}

	mods := make([]*module, 0, len(modules))
	for _, m := range modules {
		slices.SortStableFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		mods = append(mods, m)
	}
	slices.SortFunc(mods, func(a, b *module) int { return strings.Compare(a.Path, b.Path) })
	vs := make([]*vuln, 0, len(vulns))
	for _, v := range vulns {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b *vuln) int { return strings.Compare(a.ID, b.ID) })

	for name, v := range map[string]any{"db.json": meta, "modules.json": mods, "vulns.json": vs} {
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(indexDir, name), b, 0o644); err != nil {
			return 0, err
		}
	}
	return len(vs), nil
}

// latestFixed is x/vulndb's osvutils.LatestFixed: the highest fixed version
// of the SEMVER ranges, or "" if the vulnerability was introduced again
// after it (or was never fixed).
func latestFixed(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && compareSemver(latest, e.Fixed) < 0 {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && compareSemver(latest, e.Introduced) < 0 {
				latest = ""
				break
			}
		}
	}
	return latest
}

// compareSemver compares two unprefixed semantic versions (1.2.3-pre+build)
// like golang.org/x/mod/semver.Compare on their "v" forms: an invalid
// version is lower than every valid one, and two invalid ones are equal.
func compareSemver(a, b string) int {
	pa, errA := parseSemver(a)
	pb, errB := parseSemver(b)
	switch {
	case errA != nil && errB != nil:
		return 0
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	for i := range 3 {
		if c := compareNum(pa.core[i], pb.core[i]); c != 0 {
			return c
		}
	}
	switch {
	case pa.pre == nil && pb.pre == nil:
		return 0
	case pa.pre == nil:
		return 1
	case pb.pre == nil:
		return -1
	}
	for i := 0; i < len(pa.pre) && i < len(pb.pre); i++ {
		x, y := pa.pre[i], pb.pre[i]
		xn, yn := isNum(x), isNum(y)
		var c int
		switch {
		case xn && yn:
			c = compareNum(x, y)
		case xn:
			c = -1
		case yn:
			c = 1
		default:
			c = strings.Compare(x, y)
		}
		if c != 0 {
			return c
		}
	}
	return compareInt(len(pa.pre), len(pb.pre))
}

type semver struct {
	core [3]string // decimal, no leading zeros
	pre  []string  // nil when there is no pre-release part
}

func parseSemver(v string) (semver, error) {
	var s semver
	bad := errors.New("invalid semantic version " + strconv.Quote(v))
	if i := strings.IndexByte(v, '+'); i >= 0 {
		if !validIdents(v[i+1:], false) {
			return s, bad
		}
		v = v[:i]
	}
	if i := strings.IndexByte(v, '-'); i >= 0 {
		if !validIdents(v[i+1:], true) {
			return s, bad
		}
		s.pre = strings.Split(v[i+1:], ".")
		v = v[:i]
	}
	core := strings.Split(v, ".")
	if len(core) != 3 {
		return s, bad
	}
	for i, n := range core {
		if !isNum(n) || (len(n) > 1 && n[0] == '0') {
			return s, bad
		}
		s.core[i] = n
	}
	return s, nil
}

// validIdents reports whether s is a dot-separated list of non-empty
// [0-9A-Za-z-] identifiers; in a pre-release, numeric ones have no leading zero.
func validIdents(s string, pre bool) bool {
	for id := range strings.SplitSeq(s, ".") {
		if id == "" {
			return false
		}
		for _, c := range id {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
				return false
			}
		}
		if pre && isNum(id) && len(id) > 1 && id[0] == '0' {
			return false
		}
	}
	return true
}

func isNum(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// compareNum compares decimal strings without leading zeros.
func compareNum(a, b string) int {
	if c := compareInt(len(a), len(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func compareInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
