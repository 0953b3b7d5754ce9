package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/klog/v2"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer/keys"
)

// options are meshid-ca's flags.
type options struct {
	kubeconfig                     string
	namespace                      string
	serviceAccount                 string
	issuerSecret                   string
	issuerCertFile                 string
	issuerKeyFile                  string
	issuerKey                      string
	trustBundle                    string
	trustBundleFile                string
	filePoll                       time.Duration
	trustDomain                    string
	audience                       string
	leafTTL                        time.Duration
	externalLeafTTL                time.Duration
	externalWorkloads              bool
	backdate                       time.Duration
	tokenCacheTTL                  time.Duration
	allowMultiAudience             bool
	reserved                       []string
	listen                         string
	profiling                      bool
	maxConns, maxCalls, maxStreams int
	reviewQPS                      float32
	adminListen                    string
	dnsNames                       []string
	replica                        string
	watchPolicies, discovery       bool
	federatedTrustDomains          bool
	fleetInterval                  time.Duration
	fleetPerIdentity, fleetMax     int
	federation                     federationOptions
	jwt                            jwtOptions
	log                            cli.LogOptions
}

// config checks the options and turns them into a ca.Config, less the
// Kubernetes client and logger that run adds.
func (o *options) config() (ca.Config, error) {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return ca.Config{}, cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
	}
	var reserved []identity.ServiceAccount
	for _, s := range o.reserved {
		ns, name, ok := strings.Cut(s, "/")
		if !ok {
			return ca.Config{}, cli.Usagef("--reserved-service-accounts %q: name each service account as NAMESPACE/NAME", s)
		}
		reserved = append(reserved, identity.ServiceAccount{Namespace: ns, Name: name})
	}
	dns := o.dnsNames
	if len(dns) == 0 {
		dns = []string{"meshid-ca", "meshid-ca." + o.namespace, "meshid-ca." + o.namespace + ".svc", "localhost"}
	}
	cfg := ca.Config{
		TrustDomain: td, Audience: o.audience, LeafTTL: o.leafTTL, Backdate: o.backdate, TokenCacheTTL: o.tokenCacheTTL,
		AllowMultiAudienceTokens: o.allowMultiAudience, ReservedServiceAccounts: reserved,
		Namespace: o.namespace, ServiceAccount: o.serviceAccount,
		IssuerSecret: o.issuerSecret, IssuerCertFile: o.issuerCertFile, IssuerKeyFile: o.issuerKeyFile,
		BundleConfigMap: o.trustBundle, BundleFile: o.trustBundleFile, FilePollInterval: o.filePoll,
		Listen: o.listen, AdminListen: o.adminListen, AdminExtra: cli.ProfilingHandlers(o.profiling),
		MaxConnectionsPerCaller: o.maxConns, MaxCallsPerCaller: o.maxCalls, MaxStreamsPerCaller: o.maxStreams, DNSNames: dns,
		Replica: o.replica, FleetReportInterval: o.fleetInterval, WatchPolicies: o.watchPolicies, Discovery: o.discovery,
		ExternalWorkloads: o.externalWorkloads, ExternalLeafTTL: o.externalLeafTTL,
		FederatedTrustDomains:        o.federatedTrustDomains,
		MaxFleetInstancesPerIdentity: o.fleetPerIdentity, MaxFleetInstances: o.fleetMax,
	}
	if o.issuerKey != "" {
		if err := keys.Check(o.issuerKey); err != nil {
			return ca.Config{}, cli.Usagef("--issuer-key: %v", err)
		}
		cfg.IssuerKey = &keys.Key{} // stands in for the key run opens, for Validate
	}
	o.federation.apply(&cfg)
	o.jwt.apply(&cfg)
	if err := cfg.Validate(); err != nil {
		return ca.Config{}, &cli.UsageError{Err: err}
	}
	cfg.IssuerKey = nil
	return cfg, nil
}

func newRootCommand(run func(ctx context.Context, o *options, cmd *cobra.Command) error) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "meshid-ca",
		Short: "Issue short-lived SPIFFE certificates to Kubernetes service accounts",
		Long: strings.TrimSpace(`
meshid-ca is the meshid identity service. A workload sends it a CSR and its
projected service-account token; meshid-ca reviews the token with the
Kubernetes TokenReview API (for --audience only), maps
system:serviceaccount:NS:SA to spiffe://TRUST_DOMAIN/ns/NS/sa/SA, checks the
CSR and signs a leaf with the issuer (an intermediate CA) that lives in
--issuer-secret. It publishes the trust bundle from --trust-bundle and streams
its changes. Both are watched: a new issuer or bundle is used without a
restart once it verifies, and a bad one is refused, reported as an Event and a
metric, and the last good one stays in force.

The gRPC API listens on --listen over TLS 1.3, with a certificate for the CA's
own identity (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT) signed by
the issuer, so clients verify it with the trust bundle. /metrics, /ready and
/live are on --admin-listen. With --federation-listen it also serves its
trust domain's SPIFFE bundle endpoint there, for federated trust domains
(see docs/federation.md).

` + cli.ExitCodes),
		Example: `  # In a pod (in-cluster config), with cert-manager managing the issuer Secret:
  meshid-ca --namespace meshid --issuer-secret meshid-issuer --trust-bundle meshid-trust-bundle

  # On a workstation against a local API server, with the issuer in files:
  meshid-ca --kubeconfig ~/.kube/config --namespace meshid \
    --issuer-cert-file issuer.crt --issuer-key-file issuer.key --trust-bundle-file anchors.pem`,
		Args: cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			_, err := o.config()
			return err
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, cmd)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means $KUBECONFIG, ~/.kube/config, or the pod's in-cluster config")
	fs.StringVar(&o.namespace, "namespace", "meshid", "namespace of the CA, its issuer Secret and trust bundle ConfigMap")
	fs.StringVar(&o.serviceAccount, "service-account", "meshid-ca", "the CA's own service account; names the identity in its serving certificate")
	fs.StringVar(&o.issuerSecret, "issuer-secret", "", "kubernetes.io/tls Secret holding the issuer: tls.crt (issuer first, then its chain), tls.key, optional ca.crt")
	fs.StringVar(&o.issuerCertFile, "issuer-cert-file", "", "issuer certificate chain as a PEM file (instead of --issuer-secret)")
	fs.StringVar(&o.issuerKeyFile, "issuer-key-file", "", "issuer private key as a PEM file (instead of --issuer-secret); keep it mode 0600")
	fs.StringVar(&o.issuerKey, "issuer-key", "", "issuer private key in an HSM, never in the cluster: pkcs11:token=LABEL;id=HEX;object=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/path/pin (the PIN only from that file); the issuer Secret or --issuer-cert-file then holds only the certificate and chain. Create the key in the token with its own tools (SoftHSM2: pkcs11-tool --keypairgen --sensitive); see docs/ca.md")
	fs.StringVar(&o.trustBundle, "trust-bundle", "", "ConfigMap whose key ca-bundle.crt holds the trust anchors as PEM")
	fs.StringVar(&o.trustBundleFile, "trust-bundle-file", "", "trust anchors as a PEM file (instead of --trust-bundle)")
	fs.DurationVar(&o.filePoll, "file-poll-interval", 10*time.Second, "how often the issuer and bundle files are re-read for changes")
	fs.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the identities issued")
	fs.StringVar(&o.audience, "audience", identity.DefaultAudience, "audience every service-account token must be issued for")
	fs.BoolVar(&o.allowMultiAudience, "allow-multi-audience-tokens", false, "accept tokens issued for other audiences besides --audience; each of those services (a Vault, a cloud API) could then replay them here")
	fs.StringSliceVar(&o.reserved, "reserved-service-accounts", nil, "service accounts (NAMESPACE/NAME, comma-separated) never issued a certificate, besides the CA's own; meshid install names meshid-webhook's")
	fs.DurationVar(&o.leafTTL, "leaf-ttl", ca.DefaultLeafTTL, "lifetime of a workload certificate (capped at the issuer's expiry)")
	fs.DurationVar(&o.backdate, "backdate", ca.DefaultBackdate, "how far NotBefore is set in the past, for peers whose clocks are behind")
	fs.DurationVar(&o.tokenCacheTTL, "token-cache-ttl", 10*time.Second, "how long a successful token review is reused (never past the token's expiry); 0 disables the cache")
	fs.StringVar(&o.listen, "listen", ":8443", "address of the gRPC identity API")
	fs.StringVar(&o.adminListen, "admin-listen", ":9090", "address of /metrics, /ready and /live; empty disables them")
	cli.ProfilingFlag(fs, &o.profiling)
	fs.Float32Var(&o.reviewQPS, "token-review-qps", 1000, "TokenReviews a second this CA may send (bursts of twice that); the API server's priority and fairness still applies. A restart storm of N new pods needs N reviews")
	fs.IntVar(&o.maxConns, "max-connections-per-caller", ca.DefaultMaxConnectionsPerCaller, "connections one IP address may hold open; more are closed at once (-1: no limit)")
	fs.IntVar(&o.maxCalls, "max-calls-per-caller", ca.DefaultMaxCallsPerCaller, "Certify and other calls one IP address may have in flight; more get RESOURCE_EXHAUSTED (-1: no limit)")
	fs.IntVar(&o.maxStreams, "max-streams-per-caller", ca.DefaultMaxStreamsPerCaller, "WatchBundle, WatchPolicy and WatchDestinations streams one IP address may hold open; more get RESOURCE_EXHAUSTED (-1: no limit)")
	fs.StringSliceVar(&o.dnsNames, "dns-name", nil, "DNS names for the serving certificate (default meshid-ca, meshid-ca.NAMESPACE, meshid-ca.NAMESPACE.svc, localhost)")
	fs.StringVar(&o.replica, "replica", "", "name of this replica in fleet reports (default HOSTNAME-PID; the Deployment passes the pod name)")
	fs.DurationVar(&o.fleetInterval, "fleet-report-interval", 5*time.Second, "how often this replica publishes what it has in force, the updates it refused and the proxies it serves to ConfigMap meshid-fleet-REPLICA (meshid check and rotate-anchor read it); negative disables")
	fs.IntVar(&o.fleetPerIdentity, "max-fleet-instances-per-identity", fleet.DefaultMaxPerIdentity, "proxy instances of one SPIFFE ID this replica keeps status reports of; a new one beyond it is refused (RESOURCE_EXHAUSTED) and holds anchor rotation back (-1: no limit)")
	fs.IntVar(&o.fleetMax, "max-fleet-instances", fleet.DefaultMaxInstances, "proxy instances this replica keeps status reports of, in all; a new one beyond it is refused and holds anchor rotation back. The fleet ConfigMap must stay under 1 MiB: 1,500 proxies with SPIFFE IDs of 250 characters fit, about 2,000 with IDs of 50 (-1: no limit)")
	fs.BoolVar(&o.externalWorkloads, "external-workloads", false, "serve JoinExternal and RenewExternal to machines outside the cluster (ExternalWorkload, meshid.dev/v1alpha1; meshid workload join); needs get on externalworkloads and update on their status")
	fs.DurationVar(&o.externalLeafTTL, "external-leaf-ttl", ca.DefaultExternalLeafTTL, "lifetime of an external workload's certificate: a deleted or revoked ExternalWorkload keeps its last one until it expires")
	fs.BoolVar(&o.federatedTrustDomains, "federated-trust-domains", false, "trust the foreign trust domains of every FederatedTrustDomain (meshid.dev/v1alpha1): fetch each one's bundle from its endpoint when its refresh hint says, store it in the object's status and stream it to proxies with ours; needs list/watch on them and update on their status (docs/federation.md)")
	fs.BoolVar(&o.watchPolicies, "watch-policies", false, "serve AuthorizationPolicies (meshid.dev/v1alpha1) to proxies over WatchPolicy; needs list/watch on them and get on pods")
	fs.BoolVar(&o.discovery, "discovery", false, "serve WatchDestinations to transparent proxies (who is behind an address); needs list/watch on pods, services and endpointslices")
	o.federation.addFlags(fs)
	o.jwt.addFlags(fs)
	o.log.AddFlags(fs)
	cli.Setup(cmd)
	return cmd
}

// run starts the CA and serves until ctx ends.
func run(ctx context.Context, o *options, cmd *cobra.Command) error {
	log, err := o.log.Logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	if cfg.Client, err = kube.KubeClient(o.kubeconfig, "meshid-ca"); err != nil {
		return err
	}
	if cfg.ReviewClient, err = kube.KubeClientQPS(o.kubeconfig, "meshid-ca", o.reviewQPS); err != nil {
		return err
	}
	if cfg.Dynamic, err = kube.DynamicClient(o.kubeconfig, "meshid-ca"); err != nil {
		return err
	}
	cfg.Log = log
	cli.LogStart(log, "meshid-ca")
	if o.issuerKey != "" {
		// Opened before anything is served; an unavailable token later
		// makes the CA not ready (Health), not a crash.
		key, err := keys.Open(ctx, o.issuerKey, keys.Options{})
		if err != nil {
			return fmt.Errorf("meshid-ca: --issuer-key: %w", err)
		}
		defer key.Close()
		log.Info("issuer key opened", "location", string(key.Location()), "key", key.URI())
		cfg.IssuerKey, cfg.IssuerKeyHealth = key, key.Health
	}
	klog.SetSlogLogger(log) // client-go's own messages, in the same format
	svc, err := ca.New(cfg)
	if err != nil {
		return err
	}
	if err := svc.Run(ctx); err != nil {
		return fmt.Errorf("meshid-ca: %w", err)
	}
	log.Info("meshid-ca stopped")
	return nil
}
