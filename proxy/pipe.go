package proxy

import (
	"io"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// closeWriter is a connection that can end one direction (TCP, TLS).
type closeWriter interface{ CloseWrite() error }

// pipe copies both ways between the local side (the app, or the app's
// connection) and the peer side until both directions end, passing each
// end of stream on as a half-close, then closes both.
func (p *Proxy) pipe(dir string, local, peer net.Conn) {
	toPeer := p.metrics.bytes.WithLabelValues(dir, "to_peer")
	fromPeer := p.metrics.bytes.WithLabelValues(dir, "from_peer")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); copyHalf(peer, local, toPeer) }()
	go func() { defer wg.Done(); copyHalf(local, peer, fromPeer) }()
	wg.Wait()
	local.Close()
	peer.Close()
}

func copyHalf(dst, src net.Conn, c prometheus.Counter) {
	_, err := io.Copy(&counting{w: dst, c: c}, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		_ = cw.CloseWrite()
	} else {
		// An error (or no half-close): end both directions.
		dst.Close()
		src.Close()
	}
}

// counting counts what it writes.
type counting struct {
	w io.Writer
	c prometheus.Counter
}

func (c *counting) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.c.Add(float64(n))
	return n, err
}
