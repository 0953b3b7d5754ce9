package proxy

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// connSet tracks the open connections, so Run can let them finish when the
// proxy stops, and close those that do not.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

// add tracks cs until the returned func is called.
func (s *connSet) add(cs ...net.Conn) (done func()) {
	s.mu.Lock()
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	s.mu.Unlock()
	s.wg.Add(1)
	return func() {
		s.mu.Lock()
		for _, c := range cs {
			delete(s.conns, c)
		}
		s.mu.Unlock()
		s.wg.Done()
	}
}

// drain waits up to timeout for every connection to end, then closes the
// rest and waits for their handlers.
func (s *connSet) drain(clk clock.Clock, timeout time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-clk.After(timeout):
	}
	s.mu.Lock()
	log.Info("closing connections still open after the drain timeout", "open", len(s.conns))
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}
