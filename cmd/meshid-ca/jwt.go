package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/meshid/meshid/ca"
)

// jwtOptions are the JWT-SVID and OIDC discovery flags.
type jwtOptions struct {
	keySecret                        string
	maxTTL, keyLifetime, publishLead time.Duration
	issuer, oidcListen               string
	fs                               *pflag.FlagSet // to tell a default from a flag given
}

func (o *jwtOptions) addFlags(fs *pflag.FlagSet) {
	o.fs = fs
	fs.StringVar(&o.keySecret, "jwt-key-secret", "", "mint JWT-SVIDs (MintJWTSVID, the proxies' Workload API FetchJWTSVID) with ES256 keys kept in this Secret of --namespace, shared by every replica and created on first start; the CA needs get, update, create and patch on that name only (meshid install --jwt-svids renders it). Empty: no JWT-SVIDs")
	fs.DurationVar(&o.maxTTL, "jwt-ttl-max", ca.DefaultJWTMaxTTL, "the longest JWT-SVID a caller may ask for (the default lifetime is 5m; a longer request is refused, not shortened); a retired key stays published this long")
	fs.DurationVar(&o.keyLifetime, "jwt-key-lifetime", ca.DefaultJWTKeyLifetime, "how long one JWT signing key signs before its successor takes over")
	fs.DurationVar(&o.publishLead, "jwt-key-publish-lead", ca.DefaultJWTPublishLead, "how long a new JWT signing key is published (bundle, JWKS) before it signs: longer than any verifier caches the JWKS; less than --jwt-key-lifetime")
	fs.StringVar(&o.issuer, "oidc-issuer", "", "the issuer URL (https) written as iss into every JWT-SVID and served by --oidc-listen, for cloud providers and Vault to discover; it must be where they reach the discovery document")
	fs.StringVar(&o.oidcListen, "oidc-listen", "", "address of the OIDC discovery listener (ISSUER_PATH/.well-known/openid-configuration and ISSUER_PATH/keys, plain HTTP: terminate TLS for --oidc-issuer in front of it); empty disables it")
}

// apply copies the options into cfg; cfg.Validate checks them. The
// durations count only when set, so that the defaults shown in --help
// do not turn on a check without --jwt-key-secret.
func (o *jwtOptions) apply(cfg *ca.Config) {
	fs := o.fs
	cfg.JWT = ca.JWTConfig{KeySecret: o.keySecret, OIDCIssuer: o.issuer, OIDCListen: o.oidcListen}
	if fs.Changed("jwt-ttl-max") {
		cfg.JWT.MaxTTL = o.maxTTL
	}
	if fs.Changed("jwt-key-lifetime") {
		cfg.JWT.KeyLifetime = o.keyLifetime
	}
	if fs.Changed("jwt-key-publish-lead") {
		cfg.JWT.PublishLead = o.publishLead
	}
}
