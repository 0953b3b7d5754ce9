package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/poll"
)

// WebCert is the https_web profile's certificate, read from a certificate
// chain and a key in PEM files (a mounted kubernetes.io/tls Secret) and
// re-read as they change. A pair that does not load, or is outside its
// validity, is refused and logged; the last good one stays in force.
type WebCert struct {
	certFile, keyFile string
	clock             clock.WithTicker
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
}

// NewWebCert loads the pair once, so that a bad one stops the CA at start,
// and returns a WebCert to Watch. clk nil means the real clock; log nil
// discards.
func NewWebCert(certFile, keyFile string, clk clock.WithTicker, log *slog.Logger) (*WebCert, error) {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &WebCert{certFile: certFile, keyFile: keyFile, clock: clk, log: log}
	data, err := poll.Read(w.paths())
	if err != nil {
		return nil, fmt.Errorf("endpoint: web certificate: %w", err)
	}
	if err := w.set(data); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *WebCert) paths() map[string]string {
	return map[string]string{"cert": w.certFile, "key": w.keyFile}
}

func (w *WebCert) set(data map[string][]byte) error {
	c, err := tls.X509KeyPair(data["cert"], data["key"])
	if err != nil {
		return fmt.Errorf("endpoint: web certificate %s, %s: %w", w.certFile, w.keyFile, err)
	}
	now := w.clock.Now()
	if now.Before(c.Leaf.NotBefore) || now.After(c.Leaf.NotAfter) {
		return fmt.Errorf("endpoint: web certificate %s is valid from %s to %s, not now: renew it (cert-manager renews its Secrets)", w.certFile,
			c.Leaf.NotBefore.UTC().Format(time.RFC3339), c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	w.cert.Store(&c)
	return nil
}

// Watch re-reads the files every interval (<= 0: poll.DefaultInterval)
// until ctx ends.
func (w *WebCert) Watch(ctx context.Context, interval time.Duration) error {
	return poll.Watch(ctx, w.clock, w.paths(), interval, func(data map[string][]byte) {
		if err := w.set(data); err != nil {
			w.log.Error("web certificate refused; the last good one stays in force", "error", err)
			return
		}
		w.log.Info("web certificate loaded", "file", w.certFile, "not_after", w.cert.Load().Leaf.NotAfter)
	}, func(err error) {
		w.log.Error("web certificate unreadable; the last good one stays in force", "error", err)
	})
}

// GetCertificate is a tls.Config callback.
func (w *WebCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := w.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("endpoint: no web certificate loaded")
}
