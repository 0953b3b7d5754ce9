package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/endpoint"
)

// federationOptions are the bundle endpoint's flags.
type federationOptions struct {
	listen, profile, certFile, keyFile string
	refreshHint                        time.Duration
}

func (o *federationOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.listen, "federation-listen", "", "address of the SPIFFE bundle endpoint federated trust domains fetch this trust domain's bundle from; empty disables it")
	fs.StringVar(&o.profile, "federation-profile", "", "how the bundle endpoint authenticates itself: https_spiffe (the CA's own SVID; the default) or https_web (--federation-cert-file and --federation-key-file)")
	fs.StringVar(&o.certFile, "federation-cert-file", "", "https_web: the endpoint's web certificate chain as PEM (a mounted kubernetes.io/tls Secret's tls.crt, e.g. from cert-manager); re-read every --file-poll-interval")
	fs.StringVar(&o.keyFile, "federation-key-file", "", "https_web: the web certificate's private key as PEM (tls.key); keep it mode 0600")
	fs.DurationVar(&o.refreshHint, "federation-refresh-hint", endpoint.DefaultRefreshHint, "spiffe_refresh_hint published in the bundle: how often federated peers should fetch it again")
}

// apply copies the options into cfg; cfg.Validate checks them.
func (o *federationOptions) apply(cfg *ca.Config) {
	cfg.FederationListen, cfg.FederationProfile = o.listen, endpoint.Profile(o.profile)
	cfg.FederationCertFile, cfg.FederationKeyFile, cfg.FederationRefreshHint = o.certFile, o.keyFile, o.refreshHint
}
