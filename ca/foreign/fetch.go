package foreign

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// The profiles of a bundle endpoint.
const (
	SPIFFE = "https_spiffe" // the endpoint's X.509-SVID, against the foreign bundle
	Web    = "https_web"    // a web certificate, against Roots (the system's when nil)
)

// Limits bound one fetch.
type Limits struct {
	// MaxBytes is the largest answer taken; 64 KiB when 0 (a bundle of a
	// few anchors is a few KiB).
	MaxBytes int64
	// Timeout bounds the whole fetch, the answer's last byte included;
	// 10 s when 0. A slower endpoint is a slowloris.
	Timeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 64 << 10
	}
	if l.Timeout <= 0 {
		l.Timeout = 10 * time.Second
	}
	return l
}

// Endpoint is where and how a foreign trust domain's bundle is fetched.
type Endpoint struct {
	// TrustDomain is the foreign trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	// URL is the endpoint's https URL. Required.
	URL string
	// Profile is SPIFFE or Web. Required.
	Profile string
	// ID is the SPIFFE ID the endpoint presents; required with SPIFFE.
	ID spiffeid.ID
	// Trusted is the foreign bundle in force, which authenticates the
	// endpoint with SPIFFE; required with SPIFFE.
	Trusted *spiffebundle.Bundle
	// Roots authenticate the endpoint with Web; nil means the system's.
	Roots *x509.CertPool
}

// Check reports what is wrong with e, in terms of a FederatedTrustDomain.
func (e Endpoint) Check() error {
	switch {
	case e.TrustDomain.IsZero():
		return errors.New("foreign: no trust domain")
	case e.URL == "":
		return errors.New("foreign: no bundle endpoint URL")
	case e.Profile == SPIFFE && e.ID.IsZero():
		return errors.New("foreign: https_spiffe needs the endpoint's SPIFFE ID (endpointSPIFFEID)")
	case e.Profile == SPIFFE && (e.Trusted == nil || len(e.Trusted.X509Authorities()) == 0):
		return errors.New("foreign: https_spiffe needs a bundle to authenticate the endpoint with: set initialBundle to the foreign trust domain's anchors")
	case e.Profile != SPIFFE && e.Profile != Web:
		return fmt.Errorf("foreign: profile %q is not https_spiffe or https_web", e.Profile)
	}
	return nil
}

// Fetch gets e's bundle document within l and parses it for e's trust
// domain. It does not check the anchors: Check does. A refusal is an
// *Error with its Reason.
func Fetch(ctx context.Context, e Endpoint, l Limits) (*spiffebundle.Bundle, error) {
	if err := e.Check(); err != nil {
		return nil, err
	}
	l = l.withDefaults()
	var tlsConf *tls.Config
	if e.Profile == SPIFFE {
		tlsConf = tlsconfig.TLSClientConfig(e.Trusted.X509Bundle(), tlsconfig.AuthorizeID(e.ID))
		tlsConf.MinVersion = tls.VersionTLS13
	} else {
		tlsConf = &tls.Config{RootCAs: e.Roots, MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, DisableKeepAlives: true, ResponseHeaderTimeout: l.Timeout},
		// A redirect would leave the endpoint that was authenticated.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	fetchCtx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	slow := func(err error) error {
		if ctx.Err() == nil && fetchCtx.Err() != nil {
			return refuse(Slow, "%s did not answer within %s: %w", e.URL, l.Timeout, err)
		}
		return refuse(Unreachable, "GET %s: %w", e.URL, err)
	}
	req, err := http.NewRequestWithContext(fetchCtx, http.MethodGet, e.URL, http.NoBody)
	if err != nil {
		return nil, refuse(Unreachable, "the bundle endpoint URL: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, slow(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, refuse(HTTPStatus, "%s answered %s", e.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, l.MaxBytes+1))
	if err != nil {
		return nil, slow(err)
	}
	if int64(len(data)) > l.MaxBytes {
		return nil, refuse(Oversized, "%s answered more than %d bytes", e.URL, l.MaxBytes)
	}
	b, err := spiffebundle.Parse(e.TrustDomain, data)
	if err != nil {
		return nil, refuse(Garbage, "%s did not answer a SPIFFE bundle document: %w", e.URL, err)
	}
	return b, nil
}
