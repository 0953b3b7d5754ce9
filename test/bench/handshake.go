package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"time"
)

// RawHandshakes is the machine's limit for new mTLS connections: Go's
// crypto/tls, both sides in this process, TLS 1.3 with client
// certificates verified against anchors, one byte each way per connection,
// for d on workers client goroutines. It returns connections per second.
func RawHandshakes(server, client tls.Certificate, anchors *x509.CertPool, workers int, d time.Duration) (float64, error) {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{server},
		ClientAuth:             tls.RequireAnyClientCert,
		VerifyConnection:       verify,
		SessionTicketsDisabled: true,
	})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	acceptEach(l, func(c net.Conn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			_, _ = c.Write(b[:])
		}
	})
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{client},
		InsecureSkipVerify: true, // verified by VerifyConnection, as SVIDs have no DNS name
		VerifyConnection:   verify,
	}
	return tightLoop(workers, d, func() error { return oneHandshake(l.Addr().String(), cfg) })
}

func oneHandshake(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err
}
