package redirect_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/meshid/meshid/proxy/redirect"
)

// netns is a network namespace this test created (ip netns add).
type netns struct {
	name string
	fd   int
}

// newNetns creates a namespace with loopback up, removed at cleanup. It
// skips the test when not root or without ip(8).
func newNetns(t *testing.T, role string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates network namespaces (ip netns add)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2 (apt-get install iproute2)")
	}
	name := fmt.Sprintf("meshid-%d-%x-%s", os.Getpid(), rand.Uint32(), role)
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ipCmd(t, "-n", name, "link", "set", "lo", "up")
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &netns{name: name, fd: fd}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// do runs f on a thread that is in the namespace, with fsuid uid when uid
// is above zero (a socket belongs to the fsuid of the thread that makes
// it), then brings the thread back. A thread that cannot come back stays
// locked and ends with its goroutine.
func (n *netns) do(t *testing.T, uid int, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			t.Errorf("this thread's namespace: %v", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			t.Errorf("setns %s: %v", n.name, err)
			return
		}
		if uid > 0 {
			unix.Setfsuid(uid)
		}
		f()
		unix.Setfsuid(0)
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// serve listens on addr in n and answers every connection with name and,
// when the connection was redirected, its original destination.
func (n *netns) serve(t *testing.T, addr, name string) {
	t.Helper()
	var lis net.Listener
	n.do(t, 0, func() {
		var err error
		if lis, err = net.Listen("tcp", addr); err != nil {
			t.Errorf("listen %s in %s: %v", addr, n.name, err)
		}
	})
	if lis == nil {
		t.FailNow()
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			reply := name
			switch dst, err := redirect.OriginalDestination(c.(*net.TCPConn)); {
			case err == nil:
				reply += " " + dst.String()
			case !errors.Is(err, redirect.ErrNotRedirected):
				reply += " " + err.Error()
			}
			fmt.Fprintln(c, reply)
			c.Close()
		}
	}()
}

// dial connects from n as uid to addr and returns the first line it reads.
func (n *netns) dial(t *testing.T, uid int, addr string) string {
	t.Helper()
	var line string
	n.do(t, uid, func() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			line = "dial error: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		s, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && err != io.EOF {
			line = "read error: " + err.Error()
		}
		line = strings.TrimSpace(s)
	})
	return line
}

// TestRedirectInNetns programs the rule set in a pod namespace joined by a
// veth pair to a peer namespace, and checks where real connections land.
func TestRedirectInNetns(t *testing.T) {
	pod, peer := newNetns(t, "pod"), newNetns(t, "peer")
	ipCmd(t, "-n", pod.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer.name)
	ipCmd(t, "-n", pod.name, "addr", "add", "10.250.0.2/24", "dev", "eth0")
	ipCmd(t, "-n", peer.name, "addr", "add", "10.250.0.3/24", "dev", "eth0")
	ipCmd(t, "-n", peer.name, "addr", "add", "10.250.0.4/24", "dev", "eth0")
	ipCmd(t, "-n", pod.name, "addr", "add", "fd00:250::2/64", "dev", "eth0", "nodad")
	ipCmd(t, "-n", peer.name, "addr", "add", "fd00:250::3/64", "dev", "eth0", "nodad")
	ipCmd(t, "-n", pod.name, "link", "set", "eth0", "up")
	ipCmd(t, "-n", peer.name, "link", "set", "eth0", "up")

	const proxyUID = 1337
	cfg := redirect.Config{
		ProxyUID:          proxyUID,
		SkipInboundPorts:  []uint16{9100},
		SkipOutboundPorts: []uint16{5432},
		SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.250.0.4/32")},
	}
	inPod := nftables.WithNetNSFd(pod.fd)
	if err := redirect.Apply(cfg, inPod); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	first := rules(t, pod)
	if err := redirect.Apply(cfg, inPod); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	if again := rules(t, pod); !reflect.DeepEqual(first, again) {
		t.Errorf("a second Apply changed the rules:\n%v\nthen\n%v", first, again)
	}
	if len(first) != len(redirect.Rules(cfg)) {
		t.Errorf("the kernel holds %d rules, want %d", len(first), len(redirect.Rules(cfg)))
	}

	pod.serve(t, "127.0.0.1:15001", "proxy-outbound")
	pod.serve(t, "[::1]:15001", "proxy-outbound")
	pod.serve(t, ":15006", "proxy-inbound") // both families, as the proxy's
	pod.serve(t, "0.0.0.0:15000", "proxy-admin")
	pod.serve(t, "0.0.0.0:9100", "app")
	peer.serve(t, "[::]:80", "peer") // both families
	peer.serve(t, "0.0.0.0:5432", "peer")

	for _, tc := range []struct {
		name string
		from *netns
		uid  int
		addr string
		want string
	}{
		{"app to a peer goes to the outbound listener", pod, 0, "10.250.0.3:80", "proxy-outbound 10.250.0.3:80"},
		{"the proxy's own connection is left alone", pod, proxyUID, "10.250.0.3:80", "peer"},
		{"a skipped outbound port is left alone", pod, 0, "10.250.0.3:5432", "peer"},
		{"a skipped CIDR is left alone", pod, 0, "10.250.0.4:80", "peer"},
		{"loopback is left alone", pod, 0, "127.0.0.1:9100", "app"},
		{"the pod's own address is left alone", pod, 0, "10.250.0.2:9100", "app"},
		{"a peer to any port goes to the inbound listener", peer, 0, "10.250.0.2:8080", "proxy-inbound 10.250.0.2:8080"},
		{"IPv6 to a peer goes to the outbound listener", pod, 0, "[fd00:250::3]:80", "proxy-outbound [fd00:250::3]:80"},
		{"IPv6 from a peer goes to the inbound listener", peer, 0, "[fd00:250::2]:8080", "proxy-inbound [fd00:250::2]:8080"},
		{"a skipped inbound port reaches the app", peer, 0, "10.250.0.2:9100", "app"},
		{"the admin port is never redirected", peer, 0, "10.250.0.2:15000", "proxy-admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.from.dial(t, tc.uid, tc.addr); got != tc.want {
				t.Errorf("%s reached %q, want %q", tc.addr, got, tc.want)
			}
		})
	}

	if err := redirect.Remove(inPod); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := redirect.Remove(inPod); err != nil {
		t.Fatalf("Remove with nothing to remove: %v", err)
	}
	if got := pod.dial(t, 0, "10.250.0.3:80"); got != "peer" {
		t.Errorf("after Remove, 10.250.0.3:80 reached %q, want the peer", got)
	}
	if got := peer.dial(t, 0, "10.250.0.2:8080"); !strings.HasPrefix(got, "dial error") {
		t.Errorf("after Remove, 10.250.0.2:8080 reached %q, want a refused connection", got)
	}
}

// rules returns the expressions of every rule in the meshid table of n.
func rules(t *testing.T, n *netns) [][]string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(n.fd))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: redirect.Table, Family: nftables.TableFamilyINet}
	var out [][]string
	for _, chain := range []string{redirect.Prerouting, redirect.Output} {
		rs, err := c.GetRules(table, &nftables.Chain{Name: chain, Table: table})
		if err != nil {
			t.Fatalf("list rules of %s: %v", chain, err)
		}
		for _, r := range rs {
			var es []string
			for _, e := range r.Exprs {
				es = append(es, fmt.Sprintf("%T%+v", e, e))
			}
			out = append(out, es)
		}
	}
	return out
}

// TestVerifyInNetns reads the programmed table back: it matches the rule
// set it was programmed from, not another one; a table missing or changed
// behind meshid-init's back is said so.
func TestVerifyInNetns(t *testing.T) {
	pod := newNetns(t, "verify")
	inPod := nftables.WithNetNSFd(pod.fd)
	cfg := redirect.Config{SkipInboundPorts: []uint16{9100}, SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if err := redirect.Verify(cfg, inPod); !errors.Is(err, redirect.ErrMissing) {
		t.Fatalf("Verify before Apply: %v, want ErrMissing", err)
	}
	if err := redirect.Apply(cfg, inPod); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := redirect.Verify(cfg, inPod); err != nil {
		t.Fatalf("Verify after Apply: %v", err)
	}
	other := cfg
	other.SkipInboundPorts = []uint16{9200}
	if err := redirect.Verify(other, inPod); err == nil || errors.Is(err, redirect.ErrMissing) {
		t.Errorf("Verify of another rule set: %v, want a difference", err)
	}
	// Someone flushes a chain (nft flush chain inet meshid output).
	c, err := nftables.New(inPod)
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: redirect.Table, Family: nftables.TableFamilyINet}
	c.FlushChain(&nftables.Chain{Name: redirect.Output, Table: table})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := redirect.Verify(cfg, inPod); err == nil || !strings.Contains(err.Error(), "chain output holds 0 rules") {
		t.Errorf("Verify after a flush: %v, want the emptied chain named", err)
	}
	if err := redirect.Remove(inPod); err != nil {
		t.Fatal(err)
	}
	if err := redirect.Verify(cfg, inPod); !errors.Is(err, redirect.ErrMissing) {
		t.Errorf("Verify after Remove: %v, want ErrMissing", err)
	}
}
