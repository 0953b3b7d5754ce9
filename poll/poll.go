// Package poll watches files by reading them again at an interval, which
// sees atomic replacements and kubelet's symlink swaps of mounted Secrets
// and ConfigMaps alike, with nothing to set up. It hands over the contents
// of all the files whenever any of them changed.
//
// It imports nothing from meshid (the clock is k8s.io/utils/clock).
package poll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/utils/clock"
)

// DefaultInterval is how often Watch reads its files by default.
const DefaultInterval = 10 * time.Second

// Watch reads the files (key -> path) now and every interval (<= 0 means
// DefaultInterval) of clk (nil means the real clock) until ctx ends, and calls changed with their contents
// the first time and whenever any differs from the last call. A read error
// goes to failed (the next round tries again), and the next good read goes
// to changed even when nothing differs, so the caller learns the files are
// back. It returns nil when ctx ends.
func Watch(ctx context.Context, clk clock.WithTicker, paths map[string]string, interval time.Duration, changed func(map[string][]byte), failed func(error)) error {
	if len(paths) == 0 {
		return errors.New("poll: no files to watch")
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	var last map[string][]byte
	tick := clk.NewTicker(interval)
	defer tick.Stop()
	for {
		data, err := Read(paths)
		switch {
		case err != nil:
			failed(err)
			last = nil
		case !same(data, last):
			changed(data)
			last = data
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

// Read reads every file once; it fails if any cannot be read.
func Read(paths map[string]string) (map[string][]byte, error) {
	data := make(map[string][]byte, len(paths))
	for k, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
		data[k] = b
	}
	return data, nil
}

func same(a, b map[string][]byte) bool {
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
