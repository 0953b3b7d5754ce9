package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshid/meshid/issuer"
)

// CSR returns a DER certificate request for the SPIFFE ID id, with a new
// P-256 key, as a proxy sends it.
func CSR(id string) ([]byte, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
}

// RawLimit is the machine's limit for what a CA does per certificate: it
// parses and verifies the same CSR and signs the same leaf template with
// the issuer's key, in a tight loop on workers goroutines for d, and
// returns certificates per second. No network, no token, no logging.
func RawLimit(iss *issuer.KeyPair, csrDER []byte, workers int, d time.Duration) (float64, error) {
	return tightLoop(workers, d, func() error { return signOnce(iss, csrDER) })
}

func signOnce(iss *issuer.KeyPair, csrDER []byte) error {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return err
	}
	if err := csr.CheckSignature(); err != nil {
		return err
	}
	serial, err := issuer.NewSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}},
		URIs:                  csr.URIs,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	_, err = x509.CreateCertificate(rand.Reader, tmpl, iss.Cert, csr.PublicKey, iss.Key)
	return err
}

// Run is the outcome of a load: completed calls per second, their
// latencies, and how many failed (with the first failure).
type Run struct {
	PerSec   float64
	Elapsed  time.Duration
	Lat      Latencies
	Failed   int
	FirstErr error
}

// Load calls call from concurrency workers, numbered 0 to concurrency-1,
// for d.
func Load(ctx context.Context, concurrency int, d time.Duration, call func(ctx context.Context, worker int) error) Run {
	deadline := time.Now().Add(d)
	return each(ctx, concurrency,
		func() (int, bool) { return 0, time.Now().Before(deadline) }, nil,
		func(ctx context.Context, worker, _ int) error { return call(ctx, worker) })
}

// Paced offers rate calls a second for d, from up to concurrency workers
// at once: an open-loop load, unlike Load. A call's latency counts from
// when it was due, so time spent waiting for a free worker is not hidden
// (no coordinated omission).
func Paced(ctx context.Context, concurrency int, rate float64, d time.Duration, call func(ctx context.Context, worker int) error) Run {
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d / interval)
	start := time.Now()
	due := func(i int) time.Time { return start.Add(time.Duration(i) * interval) }
	var next atomic.Int64
	return each(ctx, concurrency,
		func() (int, bool) {
			i := int(next.Add(1) - 1)
			if i >= n {
				return 0, false
			}
			time.Sleep(time.Until(due(i)))
			return i, true
		}, due,
		func(ctx context.Context, worker, _ int) error { return call(ctx, worker) })
}

// Batch makes n calls, call(ctx, 0) to call(ctx, n-1), from concurrency
// workers, and reports how long all took.
func Batch(ctx context.Context, n, concurrency int, call func(context.Context, int) error) Run {
	todo := make(chan int, n)
	for i := range n {
		todo <- i
	}
	close(todo)
	return each(ctx, concurrency,
		func() (int, bool) { i, ok := <-todo; return i, ok }, nil,
		func(ctx context.Context, _, i int) error { return call(ctx, i) })
}

// each runs workers that take the next call's argument until next says
// there is none. A call's latency counts from due(arg), or from when it
// starts when due is nil.
func each(ctx context.Context, concurrency int, next func() (int, bool), due func(int) time.Time, call func(ctx context.Context, worker, arg int) error) Run {
	var (
		mu  sync.Mutex
		run Run
		wg  sync.WaitGroup
	)
	start := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat Latencies
			failed := 0
			var firstErr error
			for ctx.Err() == nil {
				arg, ok := next()
				if !ok {
					break
				}
				t := time.Now()
				if due != nil {
					t = due(arg)
				}
				if err := call(ctx, w, arg); err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			run.Lat = append(run.Lat, lat...)
			run.Failed += failed
			if run.FirstErr == nil {
				run.FirstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	run.Elapsed = time.Since(start)
	run.PerSec = float64(len(run.Lat)) / run.Elapsed.Seconds()
	if run.FirstErr != nil {
		run.FirstErr = fmt.Errorf("%d calls failed, first: %w", run.Failed, run.FirstErr)
	}
	return run
}
