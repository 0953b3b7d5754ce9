package source

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestReachRateLimit: a list that keeps failing is logged at WARN once per
// reachLogEvery, not at every retry, and told to unreachable until the
// first list succeeds; a success is said once.
func TestReachRateLimit(t *testing.T) {
	var log bytes.Buffer
	now := time.Unix(1_800_000_000, 0)
	var told []string
	r := &reachLW{
		log: slog.New(slog.NewTextHandler(&log, nil)), from: "*v1.ConfigMap meshid/meshid-trust-bundle",
		unreachable: func(err error) { told = append(told, err.Error()) },
		now:         func() time.Time { return now },
	}
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for range 5 { // retries within reachLogEvery
		r.result("list", refused)
		now = now.Add(reachLogEvery / 10)
	}
	if n := strings.Count(log.String(), "level=WARN"); n != 1 || len(told) != 1 {
		t.Fatalf("%d WARN lines and %d reasons for 5 failures within %s; want 1 each:\n%s", n, len(told), reachLogEvery, log.String())
	}
	now = now.Add(reachLogEvery)
	r.result("list", refused)
	if n := strings.Count(log.String(), "level=WARN"); n != 2 || !strings.Contains(log.String(), "failures=6") {
		t.Fatalf("after %s: %d WARN lines, want 2, the second counting 6 failures:\n%s", reachLogEvery, n, log.String())
	}
	if want := "source: cannot list *v1.ConfigMap meshid/meshid-trust-bundle: the API server does not answer (dial tcp 127.0.0.1:1: connect: connection refused); retrying"; told[1] != want {
		t.Fatalf("reason %q, want %q", told[1], want)
	}
	r.result("list", nil)
	if !strings.Contains(log.String(), `msg="the API server answers again for *v1.ConfigMap meshid/meshid-trust-bundle"`) {
		t.Fatalf("no line for the recovery:\n%s", log.String())
	}
	// Listed once: a later outage is logged, but no longer makes the
	// material "gone" (the last good one is loaded).
	r.result("watch", refused)
	if n := strings.Count(log.String(), "level=WARN"); n != 3 || len(told) != 2 {
		t.Fatalf("outage after a list: %d WARN lines and %d reasons; want 3 and 2:\n%s", n, len(told), log.String())
	}
}
