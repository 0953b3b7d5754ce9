package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// closeWriter is a connection that can end one direction (TCP, TLS).
type closeWriter interface{ CloseWrite() error }

// pipe copies both ways between the local side (the app, or the app's
// connection) and the peer side until both directions end, passing each
// end of stream on as a half-close, then closes both. A connection with no
// traffic either way for IdleTimeout is closed.
func (p *Proxy) pipe(dir string, local, peer net.Conn) {
	done := p.conns.add(local, peer)
	defer done()
	toPeer := p.metrics.bytes.WithLabelValues(dir, "to_peer")
	fromPeer := p.metrics.bytes.WithLabelValues(dir, "from_peer")
	var (
		wg   sync.WaitGroup
		last atomic.Int64 // unix nanos of the last byte either way
	)
	last.Store(time.Now().UnixNano())
	wg.Add(2)
	go func() { defer wg.Done(); p.copyHalf(peer, local, toPeer, &last) }()
	go func() { defer wg.Done(); p.copyHalf(local, peer, fromPeer, &last) }()
	wg.Wait()
	local.Close()
	peer.Close()
}

// copyHalf copies src to dst until src ends, then half-closes dst. On an
// error, or when both directions have been idle for IdleTimeout, it closes
// both connections.
func (p *Proxy) copyHalf(dst, src net.Conn, c prometheus.Counter, last *atomic.Int64) {
	buf := make([]byte, 32<<10)
	idle := p.cfg.IdleTimeout
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				dst.Close()
				src.Close()
				return
			}
			c.Add(float64(n))
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
			continue // the other direction is busy
		}
		if cw, ok := dst.(closeWriter); ok && isEOF(err) {
			_ = cw.CloseWrite()
			return
		}
		dst.Close()
		src.Close()
		return
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF)
}
