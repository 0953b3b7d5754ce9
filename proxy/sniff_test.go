//go:build unix

package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestSniff: a ClientHello offering meshid's ALPN is told from another
// TLS client, plain bytes and a client that waits for the server; in every
// case the connection sniff returns reads again from the first byte (a
// real handshake completes over it).
func TestSniff(t *testing.T) {
	cert := selfSigned(t)
	for _, tc := range []struct {
		name   string
		client func(c net.Conn) // what the client sends
		want   int
		check  func(t *testing.T, replay net.Conn, client net.Conn)
	}{
		{"meshid ClientHello", handshake([]string{"h2", ALPN}), sniffedMeshid, serverHandshakes(cert)},
		{"another TLS client", handshake([]string{"h2"}), sniffedPlain, serverHandshakes(cert)},
		{"TLS without ALPN", handshake(nil), sniffedPlain, serverHandshakes(cert)},
		{"plain HTTP", func(c net.Conn) { io.WriteString(c, "GET / HTTP/1.1\r\n\r\n") }, sniffedPlain, readsBack("GET / HTTP/1.1\r\n\r\n")},
		{"a TLS record that is not a ClientHello", func(c net.Conn) { c.Write([]byte{0x16, 3, 1, 0, 1, 0xff}) }, sniffedPlain, readsBack("\x16\x03\x01\x00\x01\xff")},
		{"server speaks first", func(net.Conn) {}, sniffedPlain, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			go tc.client(client)
			kind, replay, err := sniff(server, 200*time.Millisecond)
			if err != nil {
				t.Fatalf("sniff: %v", err)
			}
			if kind != tc.want {
				t.Fatalf("sniff = %d, want %d", kind, tc.want)
			}
			if tc.check != nil {
				tc.check(t, replay, client)
			}
		})
	}
}

// handshake starts a TLS client offering protos; it gives up when the
// test's server side is done.
func handshake(protos []string) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: protos, MinVersion: tls.VersionTLS13})
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() == nil {
			_, _ = io.WriteString(tc, "after the handshake\n")
		}
	}
}

func serverHandshakes(cert tls.Certificate) func(t *testing.T, replay, _ net.Conn) {
	return func(t *testing.T, replay, _ net.Conn) {
		tc := tls.Server(replay, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN, "h2"}})
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil || line != "after the handshake\n" {
			t.Fatalf("over the replayed connection: %q, %v", line, err)
		}
	}
}

func readsBack(want string) func(t *testing.T, replay, _ net.Conn) {
	return func(t *testing.T, replay, _ net.Conn) {
		buf := make([]byte, len(want))
		_ = replay.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(replay, buf); err != nil || string(buf) != want {
			t.Fatalf("replayed %q, %v; want %q", buf, err, want)
		}
	}
}

// TestAdmitProbe: only the pod's probes, exactly, from the node, pass as
// plain; what the client sends after the probe's request never reaches the
// app.
func TestAdmitProbe(t *testing.T) {
	node := netip.MustParseAddr("127.0.0.1")
	probes := []Probe{{Port: 8080, Path: "/healthz"}, {Port: 8080, Path: "/ready?full=1"}}
	for _, tc := range []struct {
		name    string
		node    netip.Addr
		port    int
		request string
		admit   bool
	}{
		{"the liveness probe", node, 8080, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true},
		{"a probe with its query", node, 8080, "GET /ready?full=1 HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"another path", node, 8080, "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"a prefix of the path", node, 8080, "GET /healthz/x HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"the query left off", node, 8080, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"another method", node, 8080, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false},
		{"a body", node, 8080, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", false},
		{"another port", node, 9090, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"not from the node", netip.MustParseAddr("10.1.1.1"), 8080, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"no node known", netip.Addr{}, 8080, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"not HTTP", node, 8080, "\x00\x01\x02\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{cfg: Config{Transparent: &Transparent{Probes: probes, Node: tc.node}}}
			client, server := tcpPair(t)
			// A second request rides on the same connection, in the same
			// write and after the probe is admitted: neither may pass.
			go io.WriteString(client, tc.request+"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
			conn, ok := p.admitProbe(slog.New(slog.DiscardHandler), server, server, tc.port)
			if ok != tc.admit {
				t.Fatalf("admitted = %v, want %v", ok, tc.admit)
			}
			if !ok {
				return
			}
			if _, err := io.WriteString(client, "GET /admin HTTP/1.1\r\nHost: y\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = client.(*net.TCPConn).CloseWrite()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading the probe's connection: %v (want its end once the client closes)", err)
			}
			if string(got) != tc.request {
				t.Fatalf("the app would read %q, want exactly the probe %q", got, tc.request)
			}
			if strings.Contains(string(got), "/admin") {
				t.Fatal("the second request got through")
			}
		})
	}
}
