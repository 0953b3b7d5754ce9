package source_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshid/meshid/ca/source"
)

// TestWatchUnreachable: with an API server that refuses connections (a
// real client to 127.0.0.1:1), the watch says so at WARN, naming the
// object, and tells Gone why nothing is loaded.
func TestWatchUnreachable(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var log syncLog
	gone := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- source.WatchConfigMap(ctx, source.Object{
			Client: client, Namespace: "meshid", Name: "meshid-trust-bundle", Material: source.Bundle,
			Log: slog.New(slog.NewTextHandler(&log, nil)), Gone: func(err error) { gone <- err },
		}, func(map[string][]byte) (bool, error) {
			t.Error("material from an unreachable API server")
			return false, nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchConfigMap = %v, want nil on cancel", err)
		}
	}()
	select {
	case err := <-gone:
		if msg := err.Error(); !strings.Contains(msg, "ConfigMap meshid/meshid-trust-bundle: the API server does not answer") || !strings.Contains(msg, "connection refused") {
			t.Fatalf("Gone told %q; want the object, the API server and the cause", msg)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Gone never told that the API server does not answer")
	}
	if l := log.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "ConfigMap meshid/meshid-trust-bundle: is the API server reachable") || !strings.Contains(l, "connection refused") {
		t.Fatalf("no WARN naming the object and the cause:\n%s", l)
	}
}

type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
