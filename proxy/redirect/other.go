//go:build !linux

package redirect

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// ErrNotRedirected means the connection reached the listener directly,
// without a redirect: its only destination is the listener itself.
var ErrNotRedirected = errors.New("redirect: the connection was not redirected (its destination is the listener itself)")

var errLinuxOnly = errors.New("redirect: transparent interception needs Linux (nftables)")

// Apply needs Linux.
func Apply(Config) error { return errLinuxOnly }

// Remove needs Linux.
func Remove() error { return errLinuxOnly }

// Verify needs Linux.
func Verify(Config) error { return errLinuxOnly }

// Conn is an accepted TCP connection (*net.TCPConn is one).
type Conn interface {
	syscall.Conn
	LocalAddr() net.Addr
}

// OriginalDestination needs Linux.
func OriginalDestination(Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errLinuxOnly
}
