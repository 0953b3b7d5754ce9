package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// PayloadSize is the size of a latency request's body and its response.
const PayloadSize = 1024

// ServeEcho serves HTTP/1.1 on l: every request's body is read, and a
// PayloadSize body is returned. It is the app behind the proxies.
func ServeEcho(l net.Listener) *http.Server {
	reply := []byte(strings.Repeat("x", PayloadSize))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", strconv.Itoa(len(reply)))
			_, _ = w.Write(reply)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	return srv
}

// ServeBulk serves the bulk scenario on l: a client sends a decimal byte
// count and a newline, and the server writes that many bytes and closes.
func ServeBulk(l net.Listener) {
	chunk := make([]byte, 64<<10)
	acceptEach(l, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err != nil {
			return
		}
		for n > 0 {
			w, err := c.Write(chunk[:min(n, int64(len(chunk)))])
			if err != nil {
				return
			}
			n -= int64(w)
		}
	})
}

// Bulk asks the bulk server behind addr for n bytes over one connection and
// returns MB/s (10^6 bytes per second).
func Bulk(addr string, n int64) (float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		return 0, err
	}
	got, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("bulk via %s: got %d bytes, want %d", addr, got, n)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// request is one HTTP/1.1 request on a connection of its own.
const request = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

// NewConnection opens a connection to addr, makes one request and reads the
// whole response: a new connection's cost through a proxy pair.
func NewConnection(addr string) error {
	return NewConnectionVia(func(_ context.Context, network, addr string) (net.Conn, error) { return net.Dial(network, addr) }, addr)
}

// NewConnectionVia is NewConnection over a connection from dial (from a
// network namespace, say).
func NewConnectionVia(dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) error {
	c, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		return err
	}
	return readResponse(bufio.NewReader(c))
}

// Hold opens a connection to addr, makes one request on it (so every hop is
// connected) and returns it open.
func Hold(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, strings.Replace(request, "Connection: close", "Connection: keep-alive", 1)); err != nil {
		c.Close()
		return nil, err
	}
	if err := readResponse(bufio.NewReader(c)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func readResponse(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && n != PayloadSize {
		err = fmt.Errorf("response of %d bytes, want %d", n, PayloadSize)
	}
	return err
}
