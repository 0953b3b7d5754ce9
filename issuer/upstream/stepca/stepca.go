package stepca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/issuer/upstream"
)

// tokenLife is how long a one-time token is valid: step-ca refuses a token
// used twice (by its jti) and one issued before step-ca started.
const tokenLife = 5 * time.Minute

// Config configures a Client.
type Config struct {
	// URL of step-ca, https://HOST:PORT. Required (--step-ca-url).
	URL string
	// RootPEM holds step-ca's root certificate(s): its TLS certificate is
	// verified with them, and they are the roots the intermediates must
	// chain to (the trust bundle must carry one). Required (--step-ca-root).
	RootPEM []byte
	// Provisioner is the JWK provisioner's name. Required
	// (--step-ca-provisioner).
	Provisioner string
	// Key is the provisioner's private JWK (JSON, or a JWE encrypted with
	// Password, as step-ca's ca.json stores it encrypted). Required.
	Key []byte
	// Password decrypts Key when it is a JWE.
	Password []byte
	// Timeout bounds each call; 0 means 30 s.
	Timeout time.Duration
	// Clock stamps the tokens; nil means the real clock.
	Clock clock.PassiveClock
}

// Client is a step-ca upstream.
type Client struct {
	base   *url.URL
	name   string
	jwk    *jose.JSONWebKey
	roots  []*x509.Certificate
	http   *http.Client
	clock  clock.PassiveClock
	signer jose.Signer
}

// New checks cfg and returns a Client. It does not call step-ca.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("stepca: --step-ca-url %q must be https://HOST:PORT", cfg.URL)
	}
	if cfg.Provisioner == "" {
		return nil, errors.New("stepca: a JWK provisioner name is required (--step-ca-provisioner)")
	}
	roots, err := parseCerts(cfg.RootPEM)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("stepca: --step-ca-root must hold step-ca's root certificate as PEM: %v", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if len(cfg.Key) == 0 {
		return nil, errors.New("stepca: the provisioner's private JWK is required (--step-ca-provisioner-key)")
	}
	var opts []jose.Option
	if len(cfg.Password) > 0 {
		opts = append(opts, jose.WithPassword(cfg.Password))
	}
	jwk, err := jose.ParseKey(cfg.Key, opts...)
	if err != nil {
		// The key's bytes never go into the message.
		return nil, fmt.Errorf("stepca: the provisioner key is not a private JWK (or its password is wrong): %w", jose.TrimPrefix(err))
	}
	if jwk.IsPublic() || jwk.KeyID == "" {
		return nil, errors.New("stepca: the provisioner key must be the private JWK with its kid (step ca provisioner add --create prints it)")
	}
	alg := jwk.Algorithm
	if alg == "" {
		alg = string(jose.ES256)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", jwk.KeyID))
	if err != nil {
		return nil, fmt.Errorf("stepca: the provisioner key cannot sign tokens: %w", err)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Client{
		base: u, name: cfg.Provisioner, jwk: jwk, roots: roots, clock: cfg.Clock, signer: signer,
		http: &http.Client{Timeout: timeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// Describe implements upstream.Authority.
func (c *Client) Describe() string {
	return "step-ca " + c.base.String() + " provisioner " + c.name
}

// Health asks step-ca's /health.
func (c *Client) Health(ctx context.Context) error {
	var out struct {
		Status string `json:"status"`
	}
	if err := c.do(ctx, http.MethodGet, "/health", nil, &out); err != nil {
		return err
	}
	if out.Status != "ok" {
		return fmt.Errorf("stepca: %s/health says %q", c.base, out.Status)
	}
	return nil
}

// Sign implements upstream.Authority: POST /1.0/sign with the CSR and a
// one-time token for its subject.
func (c *Client) Sign(ctx context.Context, req upstream.Request) (*upstream.Answer, error) {
	ott, err := c.token(req.Subject.CommonName)
	if err != nil {
		return nil, err
	}
	body := map[string]any{
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR})),
		"ott": ott,
	}
	if req.TTL > 0 {
		body["notAfter"] = req.TTL.String()
	}
	var out struct {
		Crt       string   `json:"crt"`
		CA        string   `json:"ca"`
		CertChain []string `json:"certChain"`
	}
	if err := c.do(ctx, http.MethodPost, "/1.0/sign", body, &out); err != nil {
		return nil, err
	}
	certs, err := parseCerts([]byte(out.Crt))
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("stepca: the answer's crt is not one PEM certificate: %v", err)
	}
	ans := &upstream.Answer{Certificate: certs[0], Roots: c.roots}
	chain := out.CertChain
	if len(chain) == 0 && out.CA != "" {
		chain = []string{out.Crt, out.CA}
	}
	for i, p := range chain {
		cs, err := parseCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("stepca: the answer's certChain[%d]: %w", i, err)
		}
		for _, c := range cs {
			if !c.Equal(ans.Certificate) {
				ans.Chain = append(ans.Chain, c)
			}
		}
	}
	return ans, nil
}

// token is a JWK provisioner's one-time token for subject, for /1.0/sign.
func (c *Client) token(subject string) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := c.clock.Now()
	claims := struct {
		jose.Claims
		SANs []string `json:"sans"`
	}{
		Claims: jose.Claims{
			Issuer: c.name, Subject: subject, Audience: jose.Audience{c.base.JoinPath("/1.0/sign").String()},
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(tokenLife)),
			ID: hex.EncodeToString(jti[:]),
		},
		SANs: []string{subject},
	}
	tok, err := jose.Signed(c.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("stepca: sign the one-time token: %w", err)
	}
	return tok, nil
}

// do makes one call and decodes its JSON answer into out; a refusal says
// step-ca's message (it never holds the token).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.JoinPath(path).String(), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("stepca: %s %s: %w", method, path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("stepca: %s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &e)
		msg := strings.TrimSpace(e.Message)
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("stepca: %s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("stepca: %s %s: the answer is not JSON: %w", method, path, err)
	}
	return nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}
