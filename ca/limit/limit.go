package limit

import (
	"net"
	"sync"
)

// Counter counts what each caller holds. The zero value is not usable; a
// Counter with Max 0 or less admits everything.
type Counter struct {
	max  int
	mu   sync.Mutex
	held map[string]int
}

// NewCounter returns a Counter that admits up to max at once per caller;
// max <= 0 means no limit.
func NewCounter(max int) *Counter { return &Counter{max: max, held: map[string]int{}} }

// Max is the per-caller limit (0 or less: none).
func (c *Counter) Max() int { return c.max }

// Acquire takes one slot for caller. It reports false, and takes nothing,
// when caller already holds Max; otherwise release gives the slot back
// (calling it more than once is harmless).
func (c *Counter) Acquire(caller string) (release func(), ok bool) {
	if c.max <= 0 {
		return func() {}, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[caller] >= c.max {
		return nil, false
	}
	c.held[caller]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.held[caller]--; c.held[caller] <= 0 {
				delete(c.held, caller)
			}
		})
	}, true
}

// Caller is the key of a remote address: its IP, or the whole address
// when it has no port.
func Caller(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// Listener accepts from l, but closes at once a connection from a caller
// that already has max open (max <= 0: no limit) and calls refused.
func Listener(l net.Listener, max int, refused func(caller string)) net.Listener {
	return &listener{Listener: l, open: NewCounter(max), refused: refused}
}

type listener struct {
	net.Listener
	open    *Counter
	refused func(string)
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		caller := Caller(c.RemoteAddr())
		release, ok := l.open.Acquire(caller)
		if !ok {
			c.Close()
			if l.refused != nil {
				l.refused(caller)
			}
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

// conn gives its caller's slot back when closed.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}
