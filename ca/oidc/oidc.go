package oidc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Paths below the issuer's own path.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	KeysPath      = "/keys"
)

// Config configures Handler.
type Config struct {
	// Issuer is the issuer URL: the "iss" of every JWT-SVID and where the
	// discovery document is found. Required; see CheckIssuer.
	Issuer string
	// JWKS returns the JWKS published now, as JSON; nil means none yet
	// (503). Required.
	JWKS func() []byte
	// MaxAge is the Cache-Control max-age of both documents; 0 means
	// DefaultMaxAge. It must be shorter than the time a key is published
	// before it signs.
	MaxAge time.Duration
}

// DefaultMaxAge is how long a verifier may cache the documents.
const DefaultMaxAge = 5 * time.Minute

// CheckIssuer says what is wrong with an issuer URL: it must be absolute,
// https (http only on a loopback host, for tests), with no query,
// fragment or user, and no trailing slash (verifiers compare "iss"
// byte for byte).
func CheckIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil {
		return fmt.Errorf("oidc: issuer %q is not a URL: %w", issuer, err)
	}
	switch {
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return fmt.Errorf("oidc: issuer %q must be an absolute https URL, such as https://oidc.example.com", issuer)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return fmt.Errorf("oidc: issuer %q must use https: cloud providers fetch the discovery document only over https (terminate TLS in front of --oidc-listen)", issuer)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("oidc: issuer %q must not carry a query, fragment or user", issuer)
	case strings.HasSuffix(u.Path, "/"):
		return fmt.Errorf("oidc: issuer %q must not end in /: verifiers compare it with the JWT's iss exactly", issuer)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// discovery is the OpenID Provider Metadata a JWT-SVID verifier needs.
type discovery struct {
	Issuer        string   `json:"issuer"`
	JWKSURI       string   `json:"jwks_uri"`
	Authorization string   `json:"authorization_endpoint"`
	ResponseTypes []string `json:"response_types_supported"`
	SubjectTypes  []string `json:"subject_types_supported"`
	Algorithms    []string `json:"id_token_signing_alg_values_supported"`
	Claims        []string `json:"claims_supported"`
}

// Handler serves the discovery document and the JWKS below the issuer's
// path, GET and HEAD only.
func Handler(c Config) (http.Handler, error) {
	if err := CheckIssuer(c.Issuer); err != nil {
		return nil, err
	}
	if c.JWKS == nil {
		return nil, errors.New("oidc: Config.JWKS is required")
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	u, _ := url.Parse(c.Issuer)
	doc, err := json.Marshal(discovery{
		Issuer: c.Issuer, JWKSURI: c.Issuer + KeysPath,
		// JWT-SVIDs come from the Workload API, not from an OAuth flow;
		// the field is required by the specification, so it is empty.
		Authorization: "",
		ResponseTypes: []string{"id_token"}, SubjectTypes: []string{"public"},
		Algorithms: []string{"ES256"}, Claims: []string{"sub", "aud", "exp", "iat", "iss"},
	})
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	cache := "public, max-age=" + strconv.Itoa(int(c.MaxAge/time.Second))
	serve := func(w http.ResponseWriter, r *http.Request, body []byte) {
		if body == nil {
			w.Header().Set("Retry-After", "10")
			http.Error(w, "no JWT signing key is published yet; retry shortly", http.StatusServiceUnavailable)
			return
		}
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:16]) + `"`
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", cache)
		h.Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	}
	mux := http.NewServeMux()
	// GET patterns match HEAD too.
	mux.HandleFunc("GET "+u.Path+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) { serve(w, r, doc) })
	mux.HandleFunc("GET "+u.Path+KeysPath, func(w http.ResponseWriter, r *http.Request) { serve(w, r, c.JWKS()) })
	return mux, nil
}
