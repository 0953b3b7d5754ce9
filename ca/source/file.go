package source

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/poll"
)

// DefaultPollInterval is how often WatchFiles reads its files.
const DefaultPollInterval = poll.DefaultInterval

// Files names files that together carry one piece of material, keyed like
// the Secret or ConfigMap they stand in for (tls.crt, tls.key, ca-bundle.crt).
type Files struct {
	// Paths maps each key to a file. Required.
	Paths map[string]string
	// Material says what the files carry. Required.
	Material Material
	// Interval between reads; <= 0 means DefaultPollInterval.
	Interval time.Duration
	// Log receives a line per update; nil discards.
	Log *slog.Logger
	// Clock paces the reads; nil means the real clock.
	Clock clock.WithTicker
	// Gone, when set, is told why whenever the files cannot be read; the
	// last good material stays in force. The next good read goes to the
	// Sink, even unchanged.
	Gone func(error)
}

// WatchFiles feeds sink with the files' contents now and whenever any of
// them changes, until ctx ends (see package poll). A file that cannot be
// read leaves the last good material in force.
func WatchFiles(ctx context.Context, f Files, sink Sink) error {
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("material", string(f.Material))
	var paths []string
	for _, p := range f.Paths {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	from := "files " + strings.Join(paths, ",")
	return poll.Watch(ctx, f.Clock, f.Paths, f.Interval,
		func(data map[string][]byte) { report(log, nil, nil, f.Material, from, data, sink) },
		func(err error) {
			log.Error("cannot read "+string(f.Material)+"; keeping the last good one in force", "source", from, "error", err)
			if f.Gone != nil {
				f.Gone(fmt.Errorf("source: cannot read %s; the last good %s stays in force: %w", from, f.Material, err))
			}
		})
}
