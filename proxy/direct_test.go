//go:build unix

package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDirectConnBehavesAsNet: a direct connection fails as net's own do,
// so that pipe and crypto/tls tell its errors apart: a deadline is a
// temporary net.Error that the next read survives, an end of stream is
// io.EOF, a closed connection is net.ErrClosed, and a peer's reset is a
// syscall error.
func TestDirectConnBehavesAsNet(t *testing.T) {
	a, b := tcpPair(t)
	d := direct(b)
	if _, ok := d.(*directConn); !ok {
		t.Fatalf("direct(%T) = %T, want *directConn", b, d)
	}

	_ = d.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := d.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a net.Error wrapping os.ErrDeadlineExceeded", err)
	}
	_ = d.SetReadDeadline(time.Time{})
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := d.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read after a deadline = %q, %v; want hello", buf[:n], err)
	}
	big := make([]byte, 8<<20) // more than the socket buffers: the write must wait for the reader
	go func() { _, _ = io.Copy(io.Discard, a) }()
	if n, err := d.Write(big); n != len(big) || err != nil {
		t.Fatalf("write of %d bytes = %d, %v", len(big), n, err)
	}
	if err := d.(*directConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Read(buf[:0]); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
	_ = a.(*net.TCPConn).CloseWrite() // not Close: a may hold unread bytes, and would reset
	if _, err := d.Read(buf); err != io.EOF {
		t.Fatalf("read at the end of the stream: %v, want io.EOF", err)
	}
	d.Close()
	if _, err := d.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
	}

	// A reset by the peer (SO_LINGER 0) is a syscall error.
	a2, b2 := tcpPair(t)
	d2 := direct(b2)
	_ = a2.(*net.TCPConn).SetLinger(0)
	a2.Close()
	_, err = d2.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read of a reset connection: %v, want ECONNRESET", err)
	}
}

// TestDirectConnUnderTLS: crypto/tls over direct connections handshakes,
// carries data both ways, and a read deadline on the TLS connection is not
// fatal to it (pipe relies on that for its idle check).
func TestDirectConnUnderTLS(t *testing.T) {
	cert := selfSigned(t)
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	a, b := tcpPair(t)
	server := tls.Server(direct(b), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	client := tls.Client(direct(a), &tls.Config{RootCAs: pool, ServerName: "direct.test", MinVersion: tls.VersionTLS13})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	_ = server.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	buf := make([]byte, 16)
	if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TLS read past the deadline: %v", err)
	}
	_ = server.SetReadDeadline(time.Time{})
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("TLS read after a deadline = %q, %v; want ping", buf[:n], err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadAtLeast(client, buf, 4); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("TLS read = %q, %v; want pong", buf[:n], err)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), DNSNames: []string{"direct.test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// BenchmarkConnRoundTrip: 1 KiB there and back over loopback TCP, through
// net's connections and through direct ones; allocs/op is the figure to
// watch (a proxy's reads and writes should not allocate).
func BenchmarkConnRoundTrip(b *testing.B) {
	for name, wrap := range map[string]func(net.Conn) net.Conn{"net": func(c net.Conn) net.Conn { return c }, "direct": direct} {
		b.Run(name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c = wrap(c)
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c = wrap(c)
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDirectConnConcurrentWriters: as net.Conn allows, several goroutines
// write at once; each Write arrives whole (no chunk interleaved with
// another), and under -race their shared fields are checked too.
func TestDirectConnConcurrentWriters(t *testing.T) {
	a, b := tcpPair(t)
	d := direct(a)
	const writers, chunks, size = 4, 500, 64
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			chunk := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range chunks {
				if _, err := d.Write(chunk); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	got := make([]byte, writers*chunks*size)
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost byte fails the test, not hangs it
	readErr := make(chan error, 1)
	go func() { _, err := io.ReadFull(b, got); readErr <- err }()
	for range writers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(got); i += size {
		if c := bytes.Count(got[i:i+size], got[i:i+1]); c != size {
			t.Fatalf("chunk at %d is mixed: %q", i, got[i:i+size])
		}
	}
}
