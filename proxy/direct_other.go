//go:build !unix

package proxy

import "net"

// direct returns c: raw system calls are for unix only (see direct_unix.go).
func direct(c net.Conn) net.Conn { return c }
