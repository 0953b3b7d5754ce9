//go:build unix

package proxy

import (
	"io"
	"net"
	"os"
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
	return &directConn{TCPConn: tc, rc: rc}
}

// directConn is a TCP connection read and written with raw system calls.
// Everything but Read and Write is the TCPConn's own.
type directConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func (c *directConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var (
		n    int
		serr syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			}
			if e == 0 {
				n = int(r)
			}
			serr = e
			return true
		}
	})
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

func (c *directConn) Write(b []byte) (int, error) {
	written := 0
	var serr syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for written < len(b) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[written])), uintptr(len(b)-written))
			switch e {
			case 0:
				written += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until writable
			default:
				serr = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, c.opError("write", err)
	case serr != 0:
		return written, c.opError("write", serr)
	}
	return written, nil
}

// opError wraps err as net does, so that callers (crypto/tls among them)
// see a net.Error and can tell a deadline from a broken connection.
func (c *directConn) opError(op string, err error) error {
	if e, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, e)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
