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
	wg.Add(1)
	go func() { defer wg.Done(); p.copyHalf(peer, local, toPeer, &last) }()
	p.copyHalf(local, peer, fromPeer, &last) // this goroutine carries the other way
	wg.Wait()
	local.Close()
	peer.Close()
}

// Buffer sizes of copyHalf. A direction reads into a small buffer of its
// own; when a read fills it, the traffic is bulk and it borrows a large one
// from bigBuffers until a read comes back small again. An idle connection
// (most of a mesh's connections, most of the time) so holds 2 x 2 KiB,
// not 2 x 32 KiB, while bulk transfers still move 32 KiB a read.
const (
	smallBuffer = 2 << 10
	bigBuffer   = 32 << 10
)

var bigBuffers = sync.Pool{New: func() any { b := make([]byte, bigBuffer); return &b }}

// copyHalf copies src to dst until src ends, then half-closes dst. On an
// error, or when both directions have been idle for IdleTimeout, it closes
// both connections.
func (p *Proxy) copyHalf(dst, src net.Conn, c prometheus.Counter, last *atomic.Int64) {
	small := make([]byte, smallBuffer)
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			bigBuffers.Put(big)
		}
	}()
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
		switch {
		case big == nil && n == len(buf): // bulk: read more at a time
			big = bigBuffers.Get().(*[]byte)
			buf = *big
		case big != nil && n < smallBuffer: // quiet again: give the large buffer back
			bigBuffers.Put(big)
			big, buf = nil, small
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
