package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
)

// Probe is an HTTP probe the kubelet makes to the app: a plain GET of Path
// (exactly, query included) on Port, from the node.
type Probe struct {
	Port int
	Path string
}

// maxProbeHead bounds the request head of a probe.
const maxProbeHead = 8 << 10

// admitProbe reads a plain request on port n from c (through replay) and
// admits it when it is exactly one of the pod's probes from the node. The
// connection it returns carries that request and nothing after it: more
// bytes from the client are read and dropped, so a probe's connection
// cannot carry a second request past the policy.
func (p *Proxy) admitProbe(log *slog.Logger, c, replay net.Conn, n int) (net.Conn, bool) {
	t := p.cfg.Transparent
	from, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	if !t.Node.IsValid() || from.Addr().Unmap() != t.Node.Unmap() || !hasProbe(t.Probes, n) {
		return nil, false
	}
	rec := &recording{r: io.LimitReader(replay, maxProbeHead)}
	br := bufio.NewReader(rec)
	req, err := http.ReadRequest(br)
	if err != nil {
		log.Debug("not a probe: unreadable HTTP request", "error", err.Error())
		return nil, false
	}
	if req.Method != http.MethodGet || req.ContentLength != 0 || len(req.TransferEncoding) > 0 || !isProbe(t.Probes, n, req.RequestURI) {
		log.Debug("not a probe", "method", req.Method, "path", req.URL.Path)
		return nil, false
	}
	head := rec.buf.Bytes()[:rec.buf.Len()-br.Buffered()]
	return &probeRequest{Conn: c, head: bytes.NewReader(head)}, true
}

func hasProbe(probes []Probe, port int) bool {
	for _, pr := range probes {
		if pr.Port == port {
			return true
		}
	}
	return false
}

func isProbe(probes []Probe, port int, uri string) bool {
	for _, pr := range probes {
		if pr.Port == port && pr.Path == uri {
			return true
		}
	}
	return false
}

// probeRequest reads the probe's request head, then drops whatever else the
// client sends until it closes.
type probeRequest struct {
	net.Conn
	head *bytes.Reader
}

func (r *probeRequest) Read(b []byte) (int, error) {
	if r.head.Len() > 0 {
		return r.head.Read(b)
	}
	for {
		if _, err := r.Conn.Read(b); err != nil {
			return 0, err
		}
	}
}

// CloseWrite passes a half-close on to the connection underneath.
func (r *probeRequest) CloseWrite() error {
	if cw, ok := r.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("proxy: cannot half-close")
}
