package output_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// TestCreateFile: a new file is written at the mode asked for; an existing
// one is refused and left as it was; a missing folder is an error.
func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "anchor.key")
	if err := output.CreateFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file %q at %v, want %q at 0600", got, fi.Mode().Perm(), "new")
	}
	if err := output.CreateFile(p, []byte("other"), 0o600); !errors.Is(err, output.ErrExists) {
		t.Fatalf("over an existing file: %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("the existing file was changed to %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left %d files behind", len(entries))
	}
	if err := output.CreateFile(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("wrote into a folder that does not exist")
	}
}

func TestCheckNew(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "old.key")
	if err := os.WriteFile(existing, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{name: "new file", path: filepath.Join(dir, "new.key")},
		{name: "existing file", path: existing, want: "--write-anchor-key " + existing + ": already exists"},
		{name: "missing directory", path: filepath.Join(dir, "nope", "a.key"), want: "the directory " + filepath.Join(dir, "nope") + " does not exist"},
		{name: "directory is a file", path: filepath.Join(existing, "a.key"), want: "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := output.CheckNew("--write-anchor-key", tt.path)
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
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
	b.Reset()
	if err := output.JSONLine(&b, map[string]int{"a": 1}); err != nil || b.String() != "{\"a\":1}\n" {
		t.Fatalf("got %q, %v", b.String(), err)
	}
}
