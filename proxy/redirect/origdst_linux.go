package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h), and
// IP6T_SO_ORIGINAL_DST, its IPv6 twin, has the same number.
const soOriginalDst = 80

// ErrNotRedirected means the connection reached the listener directly,
// without a redirect: its only destination is the listener itself.
var ErrNotRedirected = errors.New("redirect: the connection was not redirected (its destination is the listener itself)")

// Conn is an accepted TCP connection (*net.TCPConn is one).
type Conn interface {
	syscall.Conn
	LocalAddr() net.Addr
}

// OriginalDestination returns where a redirected TCP connection was going
// before the rule set sent it to the proxy, from conntrack (SO_ORIGINAL_DST;
// IPv4 first, then IPv6). A connection that was not redirected (conntrack's
// destination is the listener's own address) gives ErrNotRedirected.
func OriginalDestination(c Conn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: %w", err)
	}
	var (
		ap   netip.AddrPort
		serr error
	)
	err = rc.Control(func(fd uintptr) {
		ap, serr = originalDst(int(fd))
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: %w", err)
	}
	if serr != nil {
		return netip.AddrPort{}, serr
	}
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && unmap(local.AddrPort()) == ap {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return ap, nil
}

func originalDst(fd int) (netip.AddrPort, error) {
	var sa4 unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4); err == nil {
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), nil
	} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOPROTOOPT) && !errors.Is(err, unix.EINVAL) {
		return netip.AddrPort{}, fmt.Errorf("redirect: SO_ORIGINAL_DST: %w", err)
	}
	var sa6 unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6); err == nil {
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa6.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa6.Addr).Unmap(), port), nil
	} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOPROTOOPT) && !errors.Is(err, unix.EINVAL) {
		return netip.AddrPort{}, fmt.Errorf("redirect: IP6T_SO_ORIGINAL_DST: %w", err)
	}
	return netip.AddrPort{}, ErrNotRedirected
}

func getsockopt(fd, level int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soOriginalDst, uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// unmap turns an IPv4-mapped IPv6 address (a dual-stack socket's view of an
// IPv4 peer) into the IPv4 address.
func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }
