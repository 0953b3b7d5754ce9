//go:build unix

package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// direct returns c read and written with raw system calls when it is a TCP
// connection, and c itself otherwise (or when its descriptor is out of
// reach).
//
// Why: every read and write a Go program makes through net goes through the
// runtime's syscall bookkeeping, which wakes the runtime's monitor thread
// (sysmon) when the process was idle, and lets it hand the processor to
// another thread when the call takes over 20 µs. A sidecar is idle between
// requests, and on one core that is three to four extra context switches
// per request and hop, a third of its CPU, and a longer latency tail (see
// docs/benchmarks.md). The socket is non-blocking, so a raw read or write
// returns at once; the wait for readiness, and the deadlines, stay with
// the runtime's poller through syscall.RawConn.
func direct(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	d := &directConn{TCPConn: tc, rc: rc}
	d.readFn, d.writeFn = d.read, d.write
	return d
}

// directConn is a TCP connection read and written with raw system calls.
// Everything but Read and Write is the TCPConn's own. A read and a write
// may run at once (one goroutine each way), so each has its own fields,
// under its own lock, as net.Conn allows any goroutines to call it; readFn
// and writeFn are bound once, so that neither allocates.
type directConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu     sync.Mutex
	readFn  func(fd uintptr) bool
	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	writeFn func(fd uintptr) bool
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
}

func (c *directConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = b, 0, 0
	err := c.rc.Read(c.readFn)
	n, serr := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case serr != 0:
		return 0, c.opError("read", serr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is one attempt of Read; false means wait until readable.
func (c *directConn) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(r)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
		}
		return true
	}
}

func (c *directConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	n, serr := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case serr != 0:
		return n, c.opError("write", serr)
	}
	return n, nil
}

// write is one attempt of Write: it writes until done, or until the socket
// is full (false: wait until writable).
func (c *directConn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// opError wraps err as net does, so that callers (crypto/tls among them)
// see a net.Error and can tell a deadline from a broken connection.
func (c *directConn) opError(op string, err error) error {
	if e, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, e)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
