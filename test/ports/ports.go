package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// The range ports come from: below Linux's default ephemeral range
// (32768-60999, /proc/sys/net/ipv4/ip_local_port_range) and above the
// well-known and commonly registered ports.
const (
	low  = 20000
	high = 32768
)

var (
	mu     sync.Mutex
	handed = map[int]bool{} // never handed out twice by one process
)

// Free returns n distinct ports that nothing listened on when asked, and
// that this process has not handed out before.
func Free(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("ports: no free port on 127.0.0.1 in 20000-32767")
		}
		p := low + rand.IntN(high-low)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken
		}
		l.Close()
		handed[p] = true
		out = append(out, p)
	}
	return out, nil
}

// Port is one free port, or fails t.
func Port(t testing.TB) int {
	t.Helper()
	p, err := Free(1)
	if err != nil {
		t.Fatal(err)
	}
	return p[0]
}

// Addr is "127.0.0.1:PORT" of one free port, or fails t.
func Addr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(t))
}
