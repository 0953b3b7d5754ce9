package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/endpoint"
)

// validateFederation reports the problems with the bundle endpoint's
// settings, in terms of the flags.
func (c *Config) validateFederation() []error {
	var errs []error
	files := c.FederationCertFile != "" || c.FederationKeyFile != ""
	if c.FederationListen == "" {
		if files || c.FederationProfile != "" {
			errs = append(errs, errors.New("--federation-profile, --federation-cert-file and --federation-key-file need --federation-listen"))
		}
		return errs
	}
	switch c.FederationProfile {
	case "", endpoint.SPIFFE:
		if files {
			errs = append(errs, errors.New("--federation-cert-file and --federation-key-file are for --federation-profile https_web; https_spiffe serves the CA's own SVID"))
		}
	case endpoint.Web:
		if c.FederationCertFile == "" || c.FederationKeyFile == "" {
			errs = append(errs, errors.New("--federation-profile https_web needs --federation-cert-file and --federation-key-file (a web certificate, e.g. a cert-manager Secret mounted as files)"))
		}
	default:
		errs = append(errs, fmt.Errorf("--federation-profile %q is not https_spiffe or https_web", c.FederationProfile))
	}
	if c.FederationRefreshHint < 0 {
		errs = append(errs, errors.New("--federation-refresh-hint must not be negative"))
	}
	return errs
}

// FederationAddr is the address the bundle endpoint listens on, once Run
// has opened it; empty before, or when none is configured.
func (s *Service) FederationAddr() string {
	a, _ := s.federationAddr.Load().(string)
	return a
}

// federationServer is the bundle endpoint on its own listener.
type federationServer struct {
	lis     net.Listener
	server  *http.Server
	webCert *endpoint.WebCert
	s       *Service
}

// federationServer opens the bundle endpoint's listener; nil when none is
// configured.
func (s *Service) federationServer() (*federationServer, error) {
	if s.cfg.FederationListen == "" {
		return nil, nil
	}
	h, err := endpoint.Handler(endpoint.Config{
		TrustDomain: s.cfg.TrustDomain, RefreshHint: s.cfg.FederationRefreshHint,
		Bundle:         func() *bundle.Bundle { return s.store.Load().Bundle },
		JWTAuthorities: s.jwtAuthorities(),
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	f := &federationServer{server: endpoint.Server(h, s.cfg.Log), s: s}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: s.serving.GetCertificate}
	if s.cfg.FederationProfile == endpoint.Web {
		if f.webCert, err = endpoint.NewWebCert(s.cfg.FederationCertFile, s.cfg.FederationKeyFile, s.cfg.Clock, s.cfg.Log); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		// Web PKI callers (curl, SPIRE's https_web) may still speak 1.2.
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: f.webCert.GetCertificate}
	}
	lis, err := net.Listen("tcp", s.cfg.FederationListen)
	if err != nil {
		return nil, fmt.Errorf("ca: listen %s: %w", s.cfg.FederationListen, err)
	}
	f.lis = tls.NewListener(lis, tlsConf)
	s.federationAddr.Store(lis.Addr().String())
	return f, nil
}

func (f *federationServer) run(ctx context.Context, g *errgroup.Group) {
	log := f.s.cfg.Log
	profile := f.s.cfg.FederationProfile
	if profile == "" {
		profile = endpoint.SPIFFE
	}
	if f.webCert != nil {
		g.Go(func() error { return f.webCert.Watch(ctx, f.s.cfg.FilePollInterval) })
	}
	log.Info("serving the SPIFFE bundle endpoint", "address", f.lis.Addr().String(), "profile", string(profile), "trust_domain", f.s.cfg.TrustDomain.Name())
	serveHTTP(ctx, g, f.server, f.lis, "bundle endpoint")
}

// serveHTTP serves server on lis in g until ctx ends, then shuts it down
// within 5 s; what names it in errors.
func serveHTTP(ctx context.Context, g *errgroup.Group, server *http.Server, lis net.Listener, what string) {
	g.Go(func() error {
		if err := server.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("ca: %s: %w", what, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := server.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("ca: %s: %w", what, err)
		}
		return nil
	})
}
