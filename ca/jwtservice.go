package ca

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshid/meshid/ca/endpoint"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/jwtkey"
	"github.com/meshid/meshid/ca/oidc"
)

// Defaults of the JWT-SVID signing keys.
const (
	// DefaultJWTMaxTTL caps a JWT-SVID's lifetime (--jwt-ttl-max).
	DefaultJWTMaxTTL = time.Hour
	// DefaultJWTKeyLifetime is how long a signing key signs.
	DefaultJWTKeyLifetime = 24 * time.Hour
	// DefaultJWTPublishLead is how long a key is published before it
	// signs: longer than verifiers cache the JWKS.
	DefaultJWTPublishLead = 6 * time.Hour
)

// JWTConfig turns on JWT-SVIDs and the OIDC discovery listener.
type JWTConfig struct {
	// KeySecret names the Secret in Namespace that holds the signing keys
	// every replica shares (created on first start); empty means no
	// JWT-SVIDs: MintJWTSVID is UNIMPLEMENTED (--jwt-key-secret).
	KeySecret string
	// MaxTTL caps a JWT-SVID's lifetime, and is how long a key stays
	// published after it stops signing; 0 means DefaultJWTMaxTTL.
	MaxTTL time.Duration
	// KeyLifetime is how long a key signs; 0 means DefaultJWTKeyLifetime.
	KeyLifetime time.Duration
	// PublishLead is how long a key is published before it signs; 0 means
	// DefaultJWTPublishLead (less than KeyLifetime, which it must stay
	// below).
	PublishLead time.Duration
	// SyncInterval is how often the key Secret is read at most; 0 means
	// 30 s (a round also runs when the set is due to change).
	SyncInterval time.Duration
	// OIDCIssuer is the "iss" of every JWT-SVID and the issuer URL of the
	// discovery documents; empty leaves "iss" out (--oidc-issuer).
	OIDCIssuer string
	// OIDCListen serves /.well-known/openid-configuration and the JWKS
	// (plain HTTP: TLS is terminated in front of it); empty means none
	// (--oidc-listen).
	OIDCListen string
}

// policy is c's key policy, defaults filled.
func (c JWTConfig) policy() jwtkey.Policy {
	p := jwtkey.Policy{Lifetime: c.KeyLifetime, PublishLead: c.PublishLead, MaxTTL: c.MaxTTL}
	if p.Lifetime == 0 {
		p.Lifetime = DefaultJWTKeyLifetime
	}
	if p.PublishLead == 0 {
		p.PublishLead = min(DefaultJWTPublishLead, p.Lifetime/4)
	}
	if p.MaxTTL == 0 {
		p.MaxTTL = DefaultJWTMaxTTL
	}
	return p
}

// validate reports the problems with c, in terms of the flags.
func (c JWTConfig) validate() []error {
	var errs []error
	if c.KeySecret == "" {
		if c.OIDCIssuer != "" || c.OIDCListen != "" || c.MaxTTL != 0 || c.KeyLifetime != 0 || c.PublishLead != 0 {
			errs = append(errs, errors.New("--oidc-issuer, --oidc-listen, --jwt-ttl-max, --jwt-key-lifetime and --jwt-key-publish-lead need --jwt-key-secret NAME (the Secret the signing keys live in)"))
		}
		return errs
	}
	if c.MaxTTL < 0 || c.KeyLifetime < 0 || c.PublishLead < 0 || c.SyncInterval < 0 {
		errs = append(errs, errors.New("--jwt-ttl-max, --jwt-key-lifetime and --jwt-key-publish-lead must not be negative"))
	} else if c.MaxTTL != 0 && c.MaxTTL < time.Minute {
		errs = append(errs, fmt.Errorf("--jwt-ttl-max %s is under a minute: verifiers' clocks differ by more than that; JWT-SVIDs last %s unless the caller asks for less", c.MaxTTL, DefaultJWTTTL))
	} else if err := c.policy().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--jwt-key-lifetime %s, --jwt-key-publish-lead %s: %w", c.policy().Lifetime, c.policy().PublishLead, err))
	}
	if c.OIDCIssuer != "" {
		if err := oidc.CheckIssuer(c.OIDCIssuer); err != nil {
			errs = append(errs, fmt.Errorf("--oidc-issuer: %w", err))
		}
	} else if c.OIDCListen != "" {
		errs = append(errs, errors.New("--oidc-listen needs --oidc-issuer URL: the discovery document names the issuer verifiers expect in every JWT-SVID"))
	}
	return errs
}

// newJWTRing is the ring for c; nil when JWT-SVIDs are off.
func newJWTRing(c JWTConfig) (*jwtkey.Ring, error) {
	if c.KeySecret == "" {
		return nil, nil
	}
	ring, err := jwtkey.NewRing(c.policy())
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return ring, nil
}

// jwtMetrics registers the signing keys' metrics; the returned func counts
// a key sync round.
func (s *Service) jwtMetrics() func(error) {
	ring := s.jwt
	rounds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshid_ca_jwt_key_sync_total",
		Help: "Rounds that read (and, when due, updated) the JWT signing key Secret, by result (ok, failed).",
	}, []string{"result"})
	rounds.WithLabelValues("ok")
	rounds.WithLabelValues("failed")
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshid_ca_jwt_key_active_not_after_seconds",
		Help: "When the JWT signing key in force stops signing (Unix seconds), which is when its successor starts; 0 while no key signs.",
	}, func() float64 {
		k, ok := ring.Active(s.cfg.Clock.Now())
		if !ok {
			return 0
		}
		return float64(k.NotAfter.Unix())
	})
	published := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshid_ca_jwt_keys_published",
		Help: "JWT signing keys in the published JWKS.",
	}, func() float64 {
		return float64(len(jwtkey.JWKS(ring.Keys(), s.cfg.Clock.Now(), ring.Policy()).Keys))
	})
	s.metrics.Registry.MustRegister(rounds, active, published)
	return func(err error) {
		if err != nil {
			rounds.WithLabelValues("failed").Inc()
			return
		}
		rounds.WithLabelValues("ok").Inc()
	}
}

// jwtRunner is what runJWT starts: the key Secret's sync and the OIDC
// listener, opened before anything is served.
type jwtRunner struct {
	s      *Service
	lis    net.Listener
	server *http.Server
}

// startJWT opens the OIDC listener; nil when JWT-SVIDs are off.
func (s *Service) startJWT() (*jwtRunner, error) {
	if s.jwt == nil {
		return nil, nil
	}
	r := &jwtRunner{s: s}
	if s.cfg.JWT.OIDCListen == "" {
		return r, nil
	}
	lead := s.jwt.Policy().PublishLead
	h, err := oidc.Handler(oidc.Config{
		Issuer: s.cfg.JWT.OIDCIssuer,
		JWKS:   func() []byte { return s.jwt.JWKS(s.cfg.Clock.Now()) },
		MaxAge: min(oidc.DefaultMaxAge, lead/2),
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if r.lis, err = net.Listen("tcp", s.cfg.JWT.OIDCListen); err != nil {
		return nil, fmt.Errorf("ca: listen %s: %w", s.cfg.JWT.OIDCListen, err)
	}
	r.server = endpoint.Server(h, s.cfg.Log)
	s.oidcAddr.Store(r.lis.Addr().String())
	return r, nil
}

// OIDCAddr is the address the OIDC discovery listener listens on, once
// Run has opened it; empty before, or when none is configured.
func (s *Service) OIDCAddr() string {
	a, _ := s.oidcAddr.Load().(string)
	return a
}

func (r *jwtRunner) run(ctx context.Context, g *errgroup.Group) {
	s := r.s
	syncer := &jwtkey.Syncer{
		Client: s.cfg.Client, Namespace: s.cfg.Namespace, Name: s.cfg.JWT.KeySecret, Ring: s.jwt,
		Interval: s.cfg.JWT.SyncInterval, Clock: s.cfg.Clock, Log: s.cfg.Log, Result: s.jwtMetrics(),
	}
	g.Go(func() error { return syncer.Run(ctx) })
	if r.server == nil {
		return
	}
	s.cfg.Log.Info("serving OIDC discovery", "address", r.lis.Addr().String(), "issuer", s.cfg.JWT.OIDCIssuer)
	serveHTTP(ctx, g, r.server, r.lis, "oidc")
}

// jwtReport describes the signing keys in force for the fleet report; nil
// when JWT-SVIDs are off.
func (s *Service) jwtReport() *fleet.JWTKeys {
	if s.jwt == nil {
		return nil
	}
	now := s.cfg.Clock.Now()
	r := &fleet.JWTKeys{Published: []string{}}
	if k, ok := s.jwt.Active(now); ok {
		r.Signing, r.SigningNotAfter = k.ID, k.NotAfter
	}
	for _, k := range jwtkey.JWKS(s.jwt.Keys(), now, s.jwt.Policy()).Keys {
		r.Published = append(r.Published, k.KeyID)
	}
	return r
}

// jwtAuthorities are the published signing keys for the bundle endpoint;
// nil when JWT-SVIDs are off.
func (s *Service) jwtAuthorities() func() []endpoint.JWTAuthority {
	if s.jwt == nil {
		return nil
	}
	return func() []endpoint.JWTAuthority {
		now := s.cfg.Clock.Now()
		var out []endpoint.JWTAuthority
		for _, k := range s.jwt.Keys() {
			if k.PhaseAt(now, s.jwt.Policy()) != jwtkey.Retired {
				out = append(out, endpoint.JWTAuthority{ID: k.ID, Key: k.Signer.Public(), Created: k.Created})
			}
		}
		return out
	}
}
