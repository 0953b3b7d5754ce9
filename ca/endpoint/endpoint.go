package endpoint

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/bundle"
)

// Profile is how a bundle endpoint authenticates itself to the callers that
// fetch from it (the SPIFFE Federation profiles).
type Profile string

const (
	// SPIFFE serves with the CA's own X.509-SVID: callers verify it with a
	// bundle of this trust domain they already hold and the CA's SPIFFE ID.
	SPIFFE Profile = "https_spiffe"
	// Web serves with a web certificate (a cert-manager Secret, say) that
	// callers verify with their Web PKI roots.
	Web Profile = "https_web"
)

// ParseProfile checks a profile's name.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case SPIFFE, Web:
		return p, nil
	}
	return "", fmt.Errorf("endpoint: profile %q is not one of %s, %s", s, SPIFFE, Web)
}

// DefaultRefreshHint is the spiffe_refresh_hint published when Config's is
// zero: how often federated peers are asked to fetch again.
const DefaultRefreshHint = 5 * time.Minute

// Limits of the endpoint's HTTP server: a caller gets this long to send its
// request headers, the whole request, and to read the answer, and this many
// header bytes. The bundle is small; anything slower is a slowloris.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 60 * time.Second
	MaxHeaderBytes    = 8 << 10
)

// Config configures a bundle endpoint's handler.
type Config struct {
	// TrustDomain whose bundle is served. Required.
	TrustDomain spiffeid.TrustDomain
	// Bundle returns the trust bundle in force; nil means none is loaded
	// yet, answered 503. Required.
	Bundle func() *bundle.Bundle
	// RefreshHint is published as spiffe_refresh_hint; 0 means
	// DefaultRefreshHint.
	RefreshHint time.Duration
	// JWTAuthorities returns the JWT-SVID signing keys published now, as
	// the document's jwt-svid keys; nil means none (no JWT-SVIDs).
	JWTAuthorities func() []JWTAuthority
}

// JWTAuthority is a JWT-SVID signing key the bundle publishes.
type JWTAuthority struct {
	// ID is the key's kid. Required.
	ID string
	// Key is the public key.
	Key crypto.PublicKey
	// Created is when it was made and first published: a new key raises
	// the sequence number, as a new anchor does.
	Created time.Time
}

// Document is the SPIFFE bundle document of b for td: its anchors as
// x509-svid keys, the refresh hint, and a sequence number every replica
// computes alike from the anchors alone (see Sequence). The handler adds
// the JWT-SVID keys of Config.JWTAuthorities, whose creation raises the
// sequence number too.
func Document(td spiffeid.TrustDomain, b *bundle.Bundle, refreshHint time.Duration) *spiffebundle.Bundle {
	doc := spiffebundle.FromX509Authorities(td, b.Anchors())
	doc.SetRefreshHint(refreshHint)
	doc.SetSequenceNumber(Sequence(b))
	return doc
}

// Sequence is the bundle's spiffe_sequence: the newest anchor's NotBefore in
// Unix seconds. Every replica publishes the same number for the same anchors
// without sharing a counter, and adding an anchor (the first step of a
// rotation) raises it. Removing one does not; peers compare the anchors.
func Sequence(b *bundle.Bundle) uint64 {
	var newest int64
	for _, a := range b.Anchors() {
		newest = max(newest, a.NotBefore.Unix())
	}
	return uint64(max(newest, 0))
}

// Handler serves the bundle document on GET of any path (federated peers
// are given the endpoint's whole URL).
func Handler(cfg Config) (http.Handler, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("endpoint: a trust domain is required")
	}
	if cfg.Bundle == nil {
		return nil, errors.New("endpoint: a bundle source is required")
	}
	if cfg.RefreshHint <= 0 {
		cfg.RefreshHint = DefaultRefreshHint
	}
	h, err := federation.NewHandler(cfg.TrustDomain, source(cfg))
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.Bundle() == nil {
			http.Error(w, "no trust bundle loaded yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	}), nil
}

// source is the spiffebundle.Source the federation handler reads on every
// request.
type source Config

func (s source) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b := s.Bundle()
	if b == nil || td != s.TrustDomain {
		return nil, fmt.Errorf("endpoint: no bundle for %q", td)
	}
	doc := Document(td, b, s.RefreshHint)
	if s.JWTAuthorities != nil {
		seq, _ := doc.SequenceNumber()
		for _, a := range s.JWTAuthorities() {
			if err := doc.AddJWTAuthority(a.ID, a.Key); err != nil {
				return nil, fmt.Errorf("endpoint: JWT key %s: %w", a.ID, err)
			}
			seq = max(seq, uint64(max(a.Created.Unix(), 0)))
		}
		doc.SetSequenceNumber(seq)
	}
	return doc, nil
}

// Server is the endpoint's HTTP server with its limits, handing h every
// request; its own errors (failed handshakes, say) go to log at Warn.
func Server(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout,
		WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes,
	}
}
