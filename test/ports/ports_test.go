package ports_test

import (
	"net"
	"testing"

	"github.com/meshid/meshid/test/ports"
)

// TestFree: the ports are distinct, outside the ephemeral range, never
// handed out twice, and bindable.
func TestFree(t *testing.T) {
	got, err := ports.Free(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range append(got, ports.Port(t)) {
		if seen[p] || p < 20000 || p >= 32768 {
			t.Fatalf("port %d: a repeat, or outside 20000-32767 (%v)", p, got)
		}
		seen[p] = true
	}
	l, err := net.Listen("tcp", ports.Addr(t))
	if err != nil {
		t.Fatalf("the port handed out does not bind: %v", err)
	}
	l.Close()
}
