package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netns is a network namespace the node created (ip netns add).
type netns struct {
	name string
	fd   int
}

func newNetns(role string) (*netns, error) {
	name := fmt.Sprintf("mn-%d-%x-%s", os.Getpid(), rand.Uint32(), role)
	if err := ip("netns", "add", name); err != nil {
		return nil, err
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = ip("netns", "del", name)
		return nil, fmt.Errorf("node: open namespace %s: %w", name, err)
	}
	n := &netns{name: name, fd: fd}
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		n.remove()
		return nil, err
	}
	return n, nil
}

func (n *netns) remove() {
	unix.Close(n.fd)
	_ = ip("netns", "del", n.name)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("node: ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// do runs f on a thread inside n, then brings the thread back to the
// machine's namespace. Sockets f opens, and processes it starts, stay in n.
//
// The thread must not end while it is in n, nor at all: a child process's
// parent-death signal follows the thread that forked it, and Go ends a
// thread whose goroutine exits locked, so a thread that once started the
// API server (any thread may have) would take it down. Only when the way
// back fails is the thread left locked, to end with its goroutine.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("node: this thread's namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("node: setns %s: %w", n.name, err)
			return
		}
		err = f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DialContext dials from inside n.
func (n *netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listen listens on addr inside n.
func (n *netns) listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := n.do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}
