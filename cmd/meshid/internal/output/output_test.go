package output_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// TestWriteFile: the file is replaced whole, at the mode asked for even
// when the old one was readable by others, and nothing else is left.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "anchor.key")
	if err := os.WriteFile(p, []byte("old, longer content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := output.WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file %q at %v, want %q at 0600", got, fi.Mode().Perm(), "new")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left %d files behind", len(entries))
	}
	if err := output.WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("wrote into a folder that does not exist")
	}
}

func TestJSON(t *testing.T) {
	var b bytes.Buffer
	if err := output.JSON(&b, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "{\n  \"a\": 1\n}\n" {
		t.Fatalf("got %q", b.String())
	}
}
