package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/ca/source"
)

// recorder is a Sink that remembers what it was given.
type recorder struct {
	mu     sync.Mutex
	seen   []string
	refuse string
	calls  chan struct{}
}

func (r *recorder) sink(data map[string][]byte) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() { r.calls <- struct{}{} }()
	v := string(data["k"])
	if v == r.refuse {
		return false, errors.New("refused")
	}
	r.seen = append(r.seen, v)
	return true, nil
}

func (r *recorder) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink was not called")
	}
}

func TestWatchFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // atomic, as kubelet and operators do
			t.Fatal(err)
		}
	}
	write("one")
	r := &recorder{refuse: "bad", calls: make(chan struct{}, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- source.WatchFiles(ctx, source.Files{Paths: map[string]string{"k": path}, Material: source.Bundle, Interval: 5 * time.Millisecond}, r.sink)
	}()
	r.wait(t)
	write("bad")
	r.wait(t)
	write("two")
	r.wait(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("WatchFiles returned %v on cancel, want nil", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != 2 || r.seen[0] != "one" || r.seen[1] != "two" {
		t.Fatalf("sink saw %q, want each distinct content once: one, two", r.seen)
	}
	if len(r.calls) != 0 {
		t.Fatalf("%d extra sink calls for unchanged files", len(r.calls))
	}
}

// TestWatchFilesGone: files that cannot be read are told to Gone, and when
// they are back, even unchanged, the sink gets them again (so the caller
// knows the material is back).
func TestWatchFilesGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recorder{calls: make(chan struct{}, 10)}
	gone := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- source.WatchFiles(ctx, source.Files{Paths: map[string]string{"k": path}, Material: source.Issuer, Interval: 5 * time.Millisecond,
			Gone: func(err error) { gone <- err }}, r.sink)
	}()
	r.wait(t)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gone:
		if !strings.Contains(err.Error(), "cannot read files "+path) || !strings.Contains(err.Error(), "the last good issuer stays in force") {
			t.Fatalf("Gone(%v)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Gone was not told the file is gone")
	}
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.wait(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) != 2 || r.seen[1] != "one" {
		t.Fatalf("sink saw %q, want one, then one again once the file was back", r.seen)
	}
}
