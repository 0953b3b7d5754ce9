package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// DefaultPollInterval is how often WatchFiles reads its files.
const DefaultPollInterval = 10 * time.Second

// Files names files that together carry one piece of material, keyed like
// the Secret or ConfigMap they stand in for (tls.crt, tls.key, ca-bundle.crt).
type Files struct {
	// Paths maps each key to a file. Required.
	Paths map[string]string
	// Material says what the files carry. Required.
	Material Material
	// Interval between reads; 0 means DefaultPollInterval.
	Interval time.Duration
	// Log receives a line per update; nil discards.
	Log *slog.Logger
}

// Read reads every file once; it fails if any cannot be read.
func (f Files) Read() (map[string][]byte, error) {
	data := make(map[string][]byte, len(f.Paths))
	for k, p := range f.Paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("source: read %s: %w", f.Material, err)
		}
		data[k] = b
	}
	return data, nil
}

// WatchFiles feeds sink with the files' contents now and whenever any of
// them changes (they are re-read every Interval, so atomic replacements and
// kubelet's symlink swaps are seen), until ctx ends. A file that cannot be
// read leaves the last good material in force.
func WatchFiles(ctx context.Context, f Files, sink Sink) error {
	if len(f.Paths) == 0 {
		return errors.New("source: WatchFiles needs at least one path")
	}
	if f.Interval <= 0 {
		f.Interval = DefaultPollInterval
	}
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("material", string(f.Material))
	var paths []string
	for _, p := range f.Paths {
		paths = append(paths, p)
	}
	from := "files " + strings.Join(paths, ",")
	var last map[string][]byte
	tick := time.NewTicker(f.Interval)
	defer tick.Stop()
	for {
		data, err := f.Read()
		switch {
		case err != nil:
			log.Error("cannot read "+string(f.Material)+"; keeping the last good one in force", "source", from, "error", err)
		case !sameData(data, last):
			report(log, nil, nil, f.Material, from, data, sink)
			last = data
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func sameData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
