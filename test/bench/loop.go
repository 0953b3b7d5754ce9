package bench

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tightLoop calls fn from workers goroutines for d and returns the calls
// per second; it stops at the first error and returns it.
func tightLoop(workers int, d time.Duration, fn func() error) (float64, error) {
	var (
		n        atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := fn(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// acceptEach serves every connection l accepts with handle, in a goroutine
// of its own, until l is closed.
func acceptEach(l net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
