package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/ca/endpoint"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/foreign"
	"github.com/meshid/meshid/ca/jwtkey"
	"github.com/meshid/meshid/ca/limit"
	"github.com/meshid/meshid/ca/policies"
	"github.com/meshid/meshid/ca/source"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer/upstream"
)

// Keys of the objects and files trust material is read from.
const (
	KeyIssuerCert = corev1.TLSCertKey       // tls.crt: issuer certificate, then its chain
	KeyIssuerKey  = corev1.TLSPrivateKeyKey // tls.key: issuer private key
)

// retryInterval is how often a held-back issuer is tried again.
const retryInterval = 10 * time.Second

// MaxMessageSize bounds a request to the CA, in bytes: a CSR and a token
// with room to spare. gRPC refuses larger requests with RESOURCE_EXHAUSTED
// before they are read; tooLarge counts them.
const MaxMessageSize = 64 << 10

// Config configures a Service: one meshid-ca process.
type Config struct {
	// TrustDomain of the identities issued. Required.
	TrustDomain spiffeid.TrustDomain
	// Audience service-account tokens must be issued for. Required.
	Audience string
	// LeafTTL, Backdate: see ServerConfig.
	LeafTTL, Backdate time.Duration
	// TokenCacheTTL is how long a positive token review is reused; 0 means
	// no cache.
	TokenCacheTTL time.Duration
	// AllowMultiAudienceTokens accepts tokens issued for other audiences
	// besides Audience; false refuses them, since each of those services
	// could replay such a token to the CA (--allow-multi-audience-tokens).
	AllowMultiAudienceTokens bool
	// ReservedServiceAccounts are never issued a certificate, like the CA's
	// own, which is always reserved: meshid-webhook's, and any the operator
	// names (--reserved-service-accounts). Nil reserves only the CA's own.
	ReservedServiceAccounts []identity.ServiceAccount

	// Client talks to the API server (TokenReview, and the Secret and
	// ConfigMap when named). Required.
	Client kubernetes.Interface
	// ReviewClient, when set, makes the TokenReviews instead of Client: a
	// restart storm is a burst of reviews, which deserve a rate limit of
	// their own (--token-review-qps).
	ReviewClient kubernetes.Interface
	// Dynamic reads AuthorizationPolicies; required with WatchPolicies.
	Dynamic dynamic.Interface
	// WatchPolicies serves AuthorizationPolicies to proxies (WatchPolicy).
	WatchPolicies bool
	// ExternalWorkloads serves JoinExternal and RenewExternal for the
	// ExternalWorkloads (read and status written through Dynamic) with
	// certificates of ExternalLeafTTL (0: DefaultExternalLeafTTL), and
	// publishes their addresses as EndpointSlices of the Services that
	// select them (external.Publisher; Client lists Services and writes
	// EndpointSlices).
	ExternalWorkloads bool
	ExternalLeafTTL   time.Duration
	// FederatedTrustDomains fetches the bundle of every
	// FederatedTrustDomain, stores it in the object's status and streams
	// it with ours (Federated); needs Dynamic (--federated-trust-domains).
	FederatedTrustDomains bool
	// ForeignLimits and ForeignPace bound and pace those fetches; zero
	// means foreign's defaults.
	ForeignLimits foreign.Limits
	ForeignPace   foreign.Pace
	// Discovery serves WatchDestinations to transparent proxies, from
	// informers on Pods, Services and EndpointSlices (Client must list and
	// watch them).
	Discovery bool
	// Namespace holds IssuerSecret and BundleConfigMap, and is the CA's own.
	Namespace string
	// ServiceAccount is the CA's own; its SPIFFE ID is in the CA's serving
	// certificate. Required.
	ServiceAccount string
	// IssuerSecret names a kubernetes.io/tls Secret holding the issuer;
	// exclusive with IssuerCertFile and IssuerKeyFile.
	IssuerSecret string
	// IssuerCertFile and IssuerKeyFile hold the issuer as PEM files.
	IssuerCertFile, IssuerKeyFile string
	// Upstream, when set, is where the issuer comes from instead of
	// IssuerSecret or the issuer files (--issuer-source step-ca): this
	// replica asks it for an intermediate of a key of its own (in memory,
	// or IssuerKey), renews it at half of its life and keeps the one in
	// force while the upstream is down (issuer/upstream.Renewer). Each
	// intermediate passes the store's checks: the bundle must carry the
	// upstream's root.
	Upstream upstream.Authority
	// IssuerTTL is the lifetime asked of Upstream; 0 means
	// upstream.DefaultTTL (--issuer-ttl).
	IssuerTTL time.Duration
	// IssuerKeyURI names the issuer's private key held outside the process
	// (an HSM: issuer/keys, --issuer-key); Validate checks the other issuer
	// fields against it before the key is opened. With it, IssuerSecret's
	// tls.crt or IssuerCertFile holds only the certificate and chain, which
	// must be for this key; no tls.key or IssuerKeyFile may be given. Empty
	// means the key comes with the certificate. It may name the PIN file:
	// never logged.
	IssuerKeyURI string
	// IssuerKey is the key IssuerKeyURI names, opened; New requires it
	// with IssuerKeyURI and refuses it without.
	IssuerKey crypto.Signer
	// IssuerKeyHealth, when set, says whether IssuerKey signs (and may
	// reopen its module); asked every retry interval. While it fails the
	// CA is not ready and meshid_ca_issuer_key_up is 0.
	IssuerKeyHealth func(context.Context) error
	// BundleConfigMap names a ConfigMap whose ca-bundle.crt holds the trust
	// bundle; exclusive with BundleFile.
	BundleConfigMap string
	// BundleFile holds the trust bundle as a PEM file.
	BundleFile string
	// FilePollInterval is how often files are re-read; 0 means
	// source.DefaultPollInterval.
	FilePollInterval time.Duration

	// Listen is the gRPC address. Required.
	Listen string
	// MaxConnectionsPerCaller, MaxCallsPerCaller and MaxStreamsPerCaller
	// bound what one IP address may hold open at once; 0 means the
	// Default, negative means no limit.
	MaxConnectionsPerCaller, MaxCallsPerCaller, MaxStreamsPerCaller int
	// AdminListen serves /metrics, /ready and /live; empty means none.
	AdminListen string
	// AdminExtra are more admin handlers by mux pattern (pprof, say).
	AdminExtra map[string]http.Handler
	// DNSNames go into the serving certificate beside the SPIFFE ID.
	DNSNames []string
	// Replica names this CA process in fleet reports; empty means the host
	// name and the process ID.
	Replica string
	// FleetReportInterval is how often this replica publishes its fleet
	// report (the trust material in force, the updates it did not take,
	// the proxies it serves) to a manifest ConfigMap meshid-fleet-REPLICA
	// and its shards in Namespace, for `meshid check` and `meshid
	// rotate-anchor`; 0 means 5 s, negative disables it.
	FleetReportInterval time.Duration
	// FleetReportBytesPerMinute bounds the shard bytes this replica writes
	// a minute (fleet.WriterConfig); 0 means fleet.DefaultBytesPerMinute.
	FleetReportBytesPerMinute int
	// MaxFleetInstancesPerIdentity and MaxFleetInstances bound the proxy
	// instances this replica holds for one identity and in all; 0 means
	// fleet.DefaultMaxPerIdentity and fleet.DefaultMaxInstances, negative
	// means no limit.
	MaxFleetInstancesPerIdentity, MaxFleetInstances int

	// FederationListen serves the SPIFFE bundle endpoint (ca/endpoint) on
	// a listener of its own; empty means none (--federation-listen).
	FederationListen string
	// FederationProfile is how the endpoint authenticates itself:
	// endpoint.SPIFFE (the CA's own SVID) or endpoint.Web (FederationCertFile
	// and FederationKeyFile); empty means endpoint.SPIFFE.
	FederationProfile endpoint.Profile
	// FederationCertFile and FederationKeyFile hold the https_web
	// certificate chain and key as PEM (a mounted kubernetes.io/tls Secret),
	// re-read every FilePollInterval.
	FederationCertFile, FederationKeyFile string
	// FederationRefreshHint is the spiffe_refresh_hint published; 0 means
	// endpoint.DefaultRefreshHint.
	FederationRefreshHint time.Duration

	// JWT turns on JWT-SVIDs and OIDC discovery (ca/jwtservice.go); its
	// zero value leaves them off.
	JWT JWTConfig

	// Log receives everything the CA logs; nil discards.
	Log *slog.Logger
	// Clock tells the time and paces the retries, fleet reports and file
	// polls; nil means the real clock.
	Clock clock.WithTicker
}

// Validate reports every problem with c, in terms of the flags. It does not
// look at Client, which New requires.
func (c *Config) Validate() error {
	var errs []error
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("a trust domain is required (--trust-domain)"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("an audience is required (--audience)"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("a namespace is required (--namespace)"))
	}
	if c.ServiceAccount == "" {
		errs = append(errs, errors.New("the CA's own service account is required (--service-account)"))
	}
	for _, sa := range c.ReservedServiceAccounts {
		if c.TrustDomain.IsZero() {
			break // reported above; names are checked as part of an ID
		}
		if _, err := sa.ID(c.TrustDomain); err != nil {
			errs = append(errs, fmt.Errorf("--reserved-service-accounts %s: %w", sa, err))
		}
	}
	files := c.IssuerCertFile != "" || c.IssuerKeyFile != ""
	hsm := c.IssuerKeyURI != ""
	switch {
	case c.Upstream != nil && (c.IssuerSecret != "" || files):
		errs = append(errs, errors.New("--issuer-source step-ca gets the issuer from step-ca: drop --issuer-secret, --issuer-cert-file and --issuer-key-file"))
	case c.Upstream != nil:
		// the issuer from the upstream, its key in memory or in the HSM
	case hsm && c.IssuerKeyFile != "":
		errs = append(errs, errors.New("--issuer-key names the issuer key: drop --issuer-key-file (the certificate file holds only the issuer certificate and chain)"))
	case hsm && c.IssuerSecret == "" && c.IssuerCertFile == "":
		errs = append(errs, errors.New("--issuer-key needs the issuer certificate: --issuer-secret NAME or --issuer-cert-file PATH"))
	case hsm && c.IssuerSecret != "" && c.IssuerCertFile != "":
		errs = append(errs, errors.New("name the issuer certificate once: --issuer-secret or --issuer-cert-file, not both"))
	case hsm:
		// the certificate alone, its key in the HSM
	case c.IssuerSecret != "" && files:
		errs = append(errs, errors.New("name the issuer once: --issuer-secret or --issuer-cert-file/--issuer-key-file, not both"))
	case c.IssuerSecret == "" && !files:
		errs = append(errs, errors.New("an issuer is required: --issuer-secret NAME, or --issuer-cert-file and --issuer-key-file"))
	case files && (c.IssuerCertFile == "" || c.IssuerKeyFile == ""):
		errs = append(errs, errors.New("--issuer-cert-file and --issuer-key-file go together"))
	}
	switch {
	case c.BundleConfigMap != "" && c.BundleFile != "":
		errs = append(errs, errors.New("name the trust bundle once: --trust-bundle or --trust-bundle-file, not both"))
	case c.BundleConfigMap == "" && c.BundleFile == "":
		errs = append(errs, errors.New("a trust bundle is required: --trust-bundle NAME or --trust-bundle-file PATH"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("a gRPC address is required (--listen)"))
	}
	errs = append(errs, c.validateFederation()...)
	errs = append(errs, c.JWT.validate()...)
	if c.LeafTTL < 0 || c.ExternalLeafTTL < 0 || c.TokenCacheTTL < 0 || c.Backdate < 0 || c.FilePollInterval < 0 || c.IssuerTTL < 0 {
		errs = append(errs, errors.New("durations must not be negative (--leaf-ttl, --external-leaf-ttl, --token-cache-ttl, --backdate, --file-poll-interval, --issuer-ttl)"))
	}
	return errors.Join(errs...)
}

// Service is one meshid-ca: the Identity server, its trust sources and its
// admin endpoint.
type Service struct {
	cfg       Config
	policies  *policies.Watcher
	discovery *Discovery
	federated *Federated
	store     *trust.Store
	metrics   *Metrics
	server    *Server
	serving   *servingCert
	updates   *updates
	keyErr    atomic.Pointer[error] // the last IssuerKeyHealth answer
	renewer   *upstream.Renewer     // with Upstream
	// lastUpstream is the result of the renewer's last attempt; only its
	// Observe (one goroutine) reads and writes it.
	lastUpstream string
	recorder     atomic.Value // record.EventRecorder, once Run makes it
	// federationAddr is the bundle endpoint's address, once listening.
	federationAddr atomic.Value
	// jwt holds the JWT-SVID signing keys; nil when they are off.
	jwt *jwtkey.Ring
	// oidcAddr is the OIDC discovery listener's address, once listening.
	oidcAddr atomic.Value
}

// New returns a Service, or an error if cfg is invalid.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if cfg.Client == nil {
		return nil, errors.New("ca: a Kubernetes client is required (--kubeconfig, or run in a pod)")
	}
	if (cfg.IssuerKeyURI != "") != (cfg.IssuerKey != nil) {
		return nil, errors.New("ca: IssuerKey and IssuerKeyURI go together (the opened key and what --issuer-key names)")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.LeafTTL == 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.Backdate == 0 {
		cfg.Backdate = DefaultBackdate
	}
	if cfg.Replica == "" {
		host, _ := os.Hostname()
		cfg.Replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.FleetReportInterval == 0 {
		cfg.FleetReportInterval = 5 * time.Second
	}
	if cfg.FleetReportInterval > 0 {
		if _, err := fleet.NewWriter(fleet.WriterConfig{Name: FleetConfigMapName(cfg.Replica), BytesPerMinute: cfg.FleetReportBytesPerMinute}); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	ownID, err := identity.ServiceAccount{Namespace: cfg.Namespace, Name: cfg.ServiceAccount}.ID(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: the CA's own identity: %w", err)
	}
	reviewClient := cfg.ReviewClient
	if reviewClient == nil {
		reviewClient = cfg.Client
	}
	reviewer, err := authn.New(authn.Config{
		Client: reviewClient, TrustDomain: cfg.TrustDomain, Audience: cfg.Audience,
		AllowMultiAudience: cfg.AllowMultiAudienceTokens, CacheTTL: cfg.TokenCacheTTL, Clock: cfg.Clock,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	reserved := []spiffeid.ID{ownID}
	for _, sa := range cfg.ReservedServiceAccounts {
		id, err := sa.ID(cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("ca: reserved service account: %w", err)
		}
		reserved = append(reserved, id)
	}
	store := trust.NewStore(trust.Config{Clock: cfg.Clock, Log: cfg.Log})
	var watcher *policies.Watcher
	if cfg.WatchPolicies {
		if cfg.Dynamic == nil {
			return nil, errors.New("ca: WatchPolicies needs a dynamic client")
		}
		watcher = policies.NewWatcher(cfg.Dynamic, cfg.Log)
	}
	var ext ExternalStore
	if cfg.ExternalWorkloads {
		if cfg.Dynamic == nil {
			return nil, errors.New("ca: ExternalWorkloads needs a dynamic client")
		}
		ext = external.NewStore(cfg.Dynamic)
	}
	metrics := NewMetrics(store)
	jwtRing, err := newJWTRing(cfg.JWT)
	if err != nil {
		return nil, err
	}
	var federated *Federated
	if cfg.FederatedTrustDomains {
		if cfg.Dynamic == nil {
			return nil, errors.New("ca: FederatedTrustDomains needs a dynamic client")
		}
		if federated, err = NewFederated(FederatedConfig{
			Dynamic: cfg.Dynamic, TrustDomain: cfg.TrustDomain, Local: func() *bundle.Bundle { return store.Load().Bundle },
			Limits: cfg.ForeignLimits, Pace: cfg.ForeignPace, Registry: metrics.Registry, Log: cfg.Log, Clock: cfg.Clock,
		}); err != nil {
			return nil, err
		}
	}
	server, err := NewServer(ServerConfig{
		External: ext, ExternalLeafTTL: cfg.ExternalLeafTTL,
		JWT: jwtRing, JWTIssuer: cfg.JWT.OIDCIssuer,
		TrustDomain: cfg.TrustDomain, Authenticator: reviewer, Trust: store, Metrics: metrics,
		LeafTTL: cfg.LeafTTL, Backdate: cfg.Backdate, Clock: cfg.Clock, Log: cfg.Log,
		Reserved:  reserved,
		Fleet:     fleet.NewRegistry(fleet.Config{Clock: cfg.Clock, MaxPerIdentity: cfg.MaxFleetInstancesPerIdentity, MaxInstances: cfg.MaxFleetInstances}),
		Policies:  watcher,
		Federated: federated,
		Pods: func(ctx context.Context, ns, name string) (*corev1.Pod, error) {
			return cfg.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		},
	})
	if err != nil {
		return nil, err
	}
	var discovery *Discovery
	if cfg.Discovery {
		if discovery, err = NewDiscovery(DiscoveryConfig{
			Client: cfg.Client, TrustDomain: cfg.TrustDomain, Authenticate: server.peerID, Log: cfg.Log,
		}); err != nil {
			return nil, err
		}
	}
	s := &Service{
		jwt: jwtRing,
		cfg: cfg, store: store, metrics: metrics, server: server, policies: watcher, discovery: discovery, federated: federated, updates: newUpdates(cfg.Clock.Now),
		serving: &servingCert{
			id: ownID, dnsNames: cfg.DNSNames, ttl: min(cfg.LeafTTL, DefaultLeafTTL), backdate: cfg.Backdate,
			store: store, now: cfg.Clock.Now,
		},
	}
	if cfg.Upstream != nil {
		if s.renewer, err = s.newRenewer(); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		metrics.Registry.MustRegister(renewerCollector{s.renewer})
	}
	return s, nil
}

// Run serves until ctx ends, then stops gracefully and returns nil. It
// returns an error if a listener cannot be opened.
func (s *Service) Run(ctx context.Context) error {
	grpcLis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ca: listen %s: %w", s.cfg.Listen, err)
	}
	var adminLis net.Listener
	if s.cfg.AdminListen != "" {
		if adminLis, err = net.Listen("tcp", s.cfg.AdminListen); err != nil {
			grpcLis.Close()
			return fmt.Errorf("ca: listen %s: %w", s.cfg.AdminListen, err)
		}
	}
	federation, err := s.federationServer()
	if err != nil {
		grpcLis.Close()
		if adminLis != nil {
			adminLis.Close()
		}
		return err
	}
	jwt, err := s.startJWT()
	if err != nil {
		grpcLis.Close()
		if adminLis != nil {
			adminLis.Close()
		}
		if federation != nil {
			federation.lis.Close()
		}
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	if federation != nil {
		federation.run(ctx, g)
	}
	if jwt != nil {
		jwt.run(ctx, g)
	}
	s.watchSources(ctx, g)
	if s.cfg.FleetReportInterval > 0 {
		g.Go(func() error { return s.publishFleet(ctx) })
	}
	if s.policies != nil {
		g.Go(func() error { return s.policies.Run(ctx) })
	}
	if s.discovery != nil {
		g.Go(func() error { return s.discovery.Run(ctx) })
	}
	if s.cfg.ExternalWorkloads {
		pub, err := external.NewPublisher(external.PublisherConfig{Kube: s.cfg.Client, Dynamic: s.cfg.Dynamic, Log: s.cfg.Log, Clock: s.cfg.Clock})
		if err != nil {
			return err
		}
		g.Go(func() error { return pub.Run(ctx) })
	}
	if s.federated != nil {
		g.Go(func() error { return s.federated.Run(ctx) })
	}

	limits := newCallerLimits(orDefault(s.cfg.MaxCallsPerCaller, DefaultMaxCallsPerCaller),
		orDefault(s.cfg.MaxStreamsPerCaller, DefaultMaxStreamsPerCaller), s.metrics)
	grpcLis = limit.Listener(grpcLis, orDefault(s.cfg.MaxConnectionsPerCaller, DefaultMaxConnectionsPerCaller), func(caller string) {
		s.metrics.callerLimited.WithLabelValues("connections").Inc()
		s.cfg.Log.Warn("connection refused: too many from one caller", "caller", caller, "flag", "--max-connections-per-caller")
	})
	grpcServer := grpc.NewServer(
		grpc.ChainUnaryInterceptor(limits.unary),
		grpc.ChainStreamInterceptor(limits.stream),
		grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: s.serving.GetCertificate,
			// Proxies present their SVID to report status; ReportStatus
			// verifies it. Certify and the bundle need none.
			ClientAuth: tls.RequestClientCert,
		})),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.StatsHandler(newTooLarge(s.metrics, s.cfg.Log)),
		// Calls run on a pool of goroutines that keep their stacks: signing
		// grows a fresh goroutine's stack several times (runtime.morestack
		// was 3 % of the CA's CPU at 64 concurrent calls). A call that finds
		// every worker busy gets a goroutine of its own, as without a pool.
		grpc.NumStreamWorkers(uint32(16*runtime.GOMAXPROCS(0))),
		// A client gets 10 s to finish its TLS handshake (no slowloris), and
		// at most 100 concurrent calls per connection.
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxConcurrentStreams(100),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	)
	identityv1.RegisterIdentityServer(grpcServer, s.server)
	if s.discovery != nil {
		identityv1.RegisterDiscoveryServer(grpcServer, s.discovery)
	}
	g.Go(func() error {
		s.cfg.Log.Info("serving the identity API", "address", grpcLis.Addr().String(), "spiffe_id", s.serving.id.String())
		if err := grpcServer.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("ca: grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		s.server.Close()
		if s.discovery != nil {
			s.discovery.Close()
		}
		stopped := make(chan struct{})
		go func() { grpcServer.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-s.cfg.Clock.After(5 * time.Second):
			grpcServer.Stop()
		}
		return nil
	})
	if adminLis != nil {
		admin := &http.Server{Handler: s.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			s.cfg.Log.Info("serving admin endpoints", "address", adminLis.Addr().String())
			if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("ca: admin: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := admin.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("ca: admin: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (s *Service) watchSources(ctx context.Context, g *errgroup.Group) {
	var rec record.EventRecorder
	if s.cfg.IssuerSecret != "" || s.cfg.BundleConfigMap != "" || s.renewer != nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.cfg.Client.CoreV1().Events(s.cfg.Namespace)})
		rec = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "meshid-ca"})
		s.recorder.Store(rec)
		g.Go(func() error { <-ctx.Done(); b.Shutdown(); return nil })
	}
	issuerFrom, bundleFrom := "files "+s.cfg.IssuerCertFile+","+s.cfg.IssuerKeyFile, "files "+s.cfg.BundleFile
	if s.cfg.IssuerSecret != "" {
		issuerFrom = "Secret " + s.cfg.Namespace + "/" + s.cfg.IssuerSecret
	}
	if s.cfg.BundleConfigMap != "" {
		bundleFrom = "ConfigMap " + s.cfg.Namespace + "/" + s.cfg.BundleConfigMap
	}
	issuerSink := func(data map[string][]byte) (bool, error) {
		changed, err := s.setIssuer(data)
		s.metrics.reload("issuer", changed, err)
		s.updates.applied(source.Issuer, issuerFrom, certSHA256(data[KeyIssuerCert]), err)
		return changed, err
	}
	bundleSink := func(data map[string][]byte) (bool, error) {
		changed, err := s.setBundle(data)
		s.metrics.reload("bundle", changed, err)
		s.updates.applied(source.Bundle, bundleFrom, bundleSHA256(data[bundle.Key]), err)
		return changed, err
	}
	gone := func(m source.Material, from string) func(error) {
		return func(err error) { s.updates.gone(m, from, err) }
	}
	obj := func(name string, m source.Material, from string) source.Object {
		return source.Object{Client: s.cfg.Client, Namespace: s.cfg.Namespace, Name: name, Material: m, Recorder: rec, Log: s.cfg.Log, Gone: gone(m, from), Clock: s.cfg.Clock}
	}
	files := func(m source.Material, from string, paths map[string]string) source.Files {
		return source.Files{Paths: paths, Material: m, Interval: s.cfg.FilePollInterval, Log: s.cfg.Log, Clock: s.cfg.Clock, Gone: gone(m, from)}
	}
	if s.cfg.BundleConfigMap != "" {
		g.Go(func() error {
			return source.WatchConfigMap(ctx, obj(s.cfg.BundleConfigMap, source.Bundle, bundleFrom), bundleSink)
		})
	} else {
		g.Go(func() error {
			return source.WatchFiles(ctx, files(source.Bundle, bundleFrom, map[string]string{bundle.Key: s.cfg.BundleFile}), bundleSink)
		})
	}
	if s.cfg.IssuerKeyHealth != nil {
		g.Go(func() error { return s.watchIssuerKey(ctx) })
	}
	// A held-back issuer that was not valid yet is tried again.
	g.Go(func() error {
		tick := s.cfg.Clock.NewTicker(retryInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C():
			}
			if changed, err := s.store.Retry(); changed || err != nil {
				s.metrics.reload("issuer", changed, err)
				s.updates.retried(source.Issuer, changed, err)
			}
		}
	})
	// The issuer waits for the first bundle: there is nothing to verify it
	// against before, and refusing it for that would be a false alarm.
	g.Go(func() error {
		if !s.waitBundle(ctx) {
			return nil
		}
		if s.renewer != nil {
			return s.renewer.Run(ctx)
		}
		if s.cfg.IssuerSecret != "" {
			return source.WatchSecret(ctx, obj(s.cfg.IssuerSecret, source.Issuer, issuerFrom), issuerSink)
		}
		paths := map[string]string{KeyIssuerCert: s.cfg.IssuerCertFile}
		if s.cfg.IssuerKey == nil {
			paths[KeyIssuerKey] = s.cfg.IssuerKeyFile
		}
		return source.WatchFiles(ctx, files(source.Issuer, issuerFrom, paths), issuerSink)
	})
}

// watchIssuerKey asks IssuerKeyHealth every retryInterval and keeps
// keyErr, the metric and the log in step with its answer.
func (s *Service) watchIssuerKey(ctx context.Context) error {
	tick := s.cfg.Clock.NewTicker(retryInterval)
	defer tick.Stop()
	var last error = errKeyUnchecked
	for {
		err := s.cfg.IssuerKeyHealth(ctx)
		switch {
		case err != nil && last == nil, err != nil && last == errKeyUnchecked:
			s.cfg.Log.Error("the issuer key does not sign; not ready until it does", "error", err)
		case err == nil && last != nil:
			s.cfg.Log.Info("the issuer key signs")
		}
		last = err
		s.keyErr.Store(&err)
		up := 0.0
		if err == nil {
			up = 1
		}
		s.metrics.issuerKeyUp.Set(up)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

var errKeyUnchecked = errors.New("the issuer key has not been checked yet")

// keyReady is the last IssuerKeyHealth answer (nil without an IssuerKeyHealth).
func (s *Service) keyReady() error {
	if s.cfg.IssuerKeyHealth == nil {
		return nil
	}
	if p := s.keyErr.Load(); p != nil {
		return *p
	}
	return errKeyUnchecked
}

// waitBundle waits until a trust bundle is loaded; false if ctx ended first.
func (s *Service) waitBundle(ctx context.Context) bool {
	for {
		changed := s.store.Changed()
		if s.store.Load().Bundle != nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

func (s *Service) setIssuer(data map[string][]byte) (bool, error) {
	cert, key := data[KeyIssuerCert], data[KeyIssuerKey]
	if s.cfg.IssuerKey != nil {
		switch {
		case len(cert) == 0:
			return false, fmt.Errorf("issuer: %s is required (the issuer certificate and chain; the key is in the HSM)", KeyIssuerCert)
		case len(key) != 0:
			return false, fmt.Errorf("issuer: %s holds a private key, but --issuer-key names a key in an HSM: remove %s so that no issuer key is stored in the cluster", KeyIssuerKey, KeyIssuerKey)
		}
		return s.store.SetIssuerCert(cert, s.cfg.IssuerKey)
	}
	if len(cert) == 0 || len(key) == 0 {
		return false, fmt.Errorf("issuer: both %s and %s are required (a kubernetes.io/tls Secret holds them)", KeyIssuerCert, KeyIssuerKey)
	}
	return s.store.SetIssuer(cert, key)
}

func (s *Service) setBundle(data map[string][]byte) (bool, error) {
	pem, ok := data[bundle.Key]
	if !ok {
		return false, fmt.Errorf("bundle: key %s is missing (the ConfigMap must hold the PEM anchors under it)", bundle.Key)
	}
	var window time.Duration
	if w := strings.TrimSpace(string(data[bundle.ReissueWindowKey])); w != "" {
		var err error
		if window, err = time.ParseDuration(w); err != nil || window < 0 {
			return false, fmt.Errorf("bundle: %s %q is not a duration such as 30s", bundle.ReissueWindowKey, w)
		}
	}
	// The window applies even when the bundle itself is held back: it asks
	// about leaves, not anchors.
	windowChanged := s.store.SetReissueWindow(window)
	changed, err := s.store.SetBundle(pem)
	if err != nil {
		return windowChanged, err
	}
	return windowChanged || changed, nil
}

// AdminHandler serves /metrics, /ready and /live.
func (s *Service) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range s.cfg.AdminExtra {
		mux.Handle(pattern, h)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{Registry: s.metrics.Registry}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /fleet", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.fleetReport())
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		err := s.keyReady()
		if err == nil {
			err = s.store.Load().Check(s.cfg.Clock.Now())
		}
		if err != nil {
			msg := "not ready: " + err.Error()
			if why := s.updates.goneReasons(); why != "" {
				msg += " (" + why + ")"
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// orDefault is v, or def when v is 0; a negative v (no limit) stays.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
