package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/proxy/state"
)

// TestPipeCarriesEveryByte: bursts of every size, around the small and the
// large buffer, both ways at once, arrive whole and in order, and an end of
// stream is passed on as a half-close; over net's connections and over the
// proxy's direct ones.
func TestPipeCarriesEveryByte(t *testing.T) {
	for name, wrap := range map[string]func(net.Conn) net.Conn{"net": func(c net.Conn) net.Conn { return c }, "direct": direct} {
		t.Run(name, func(t *testing.T) { testPipeCarriesEveryByte(t, wrap) })
	}
}

func testPipeCarriesEveryByte(t *testing.T, wrap func(net.Conn) net.Conn) {
	p := &Proxy{cfg: Config{IdleTimeout: time.Minute}, metrics: newMetrics(state.NewStore(spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain))), conns: newConnSet()}
	app, local := tcpPair(t)
	peer, remote := tcpPair(t)
	go p.pipe("inbound", wrap(local), wrap(peer))

	sizes := []int{1, smallBuffer - 1, smallBuffer, smallBuffer + 1, bigBuffer, 3*bigBuffer + 7, 10, 1 << 20, 5}
	send := func(w net.Conn) []byte {
		var all []byte
		for _, n := range sizes {
			b := make([]byte, n)
			_, _ = rand.Read(b)
			all = append(all, b...)
		}
		go func() {
			off := 0
			for _, n := range sizes {
				if _, err := w.Write(all[off : off+n]); err != nil {
					t.Error(err)
					return
				}
				off += n
			}
			_ = w.(*net.TCPConn).CloseWrite()
		}()
		return all
	}
	toPeer, toApp := send(app), send(remote)
	for name, c := range map[string]struct {
		r    net.Conn
		want []byte
	}{"app to peer": {remote, toPeer}, "peer to app": {app, toApp}} {
		got, err := io.ReadAll(c.r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Fatalf("%s: got %d bytes, want %d (or they differ)", name, len(got), len(c.want))
		}
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
