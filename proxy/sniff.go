package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/meshid/meshid/sidecar"
)

// ALPN is the application protocol meshid-proxy offers when it originates
// mTLS: a transparent inbound listener tells a meshid peer from an app's
// own TLS by it (sidecar.ALPN).
const ALPN = sidecar.ALPN

// Kinds of inbound traffic, as sniff tells them apart.
const (
	sniffedMeshid = iota // a TLS ClientHello offering ALPN
	sniffedPlain         // anything else: plain bytes, another TLS client, or a client that waits for the server
)

var errSniffed = errors.New("proxy: ClientHello read") // ends the sniffing handshake, never seen by a peer

// sniff reads the start of c, for at most wait, and says whether it is a
// meshid ClientHello. It returns a connection that reads again from the
// first byte. A client that sends nothing within wait (a protocol where the
// server speaks first) is plain.
func sniff(c net.Conn, wait time.Duration) (kind int, replay net.Conn, err error) {
	br := bufio.NewReaderSize(c, 16)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	first, err := br.Peek(1)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return sniffedPlain, &peeked{Conn: c, r: br}, nil
	case err != nil:
		return 0, nil, err
	case first[0] != 0x16: // not a TLS handshake record
		return sniffedPlain, &peeked{Conn: c, r: br}, nil
	}
	// Let crypto/tls parse the ClientHello, over a connection that records
	// what it reads and writes nothing, and stop it once the hello is read.
	rec := &recording{r: br}
	offered := false
	hs := tls.Server(&sniffConn{Conn: c, r: rec}, &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			offered = slices.Contains(hello.SupportedProtos, ALPN)
			return nil, errSniffed
		},
	})
	err = hs.Handshake()
	replay = &peeked{Conn: c, r: io.MultiReader(bytes.NewReader(rec.buf.Bytes()), br)}
	switch {
	case errors.Is(err, errSniffed) && offered:
		return sniffedMeshid, replay, nil
	case errors.Is(err, errSniffed), errors.Is(err, os.ErrDeadlineExceeded):
		return sniffedPlain, replay, nil
	}
	// Not a ClientHello crypto/tls can read: the app's to judge.
	return sniffedPlain, replay, nil
}

// recording reads from r and keeps a copy of what it read.
type recording struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recording) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.buf.Write(b[:n])
	return n, err
}

// sniffConn reads through r and swallows writes (the alert crypto/tls sends
// when the sniff stops it).
type sniffConn struct {
	net.Conn
	r io.Reader
}

func (s *sniffConn) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s *sniffConn) Write(b []byte) (int, error) { return len(b), nil }
func (s *sniffConn) Close() error                { return nil }
