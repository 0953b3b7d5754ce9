package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/poll"
	"github.com/meshid/meshid/proxy/state"
	"github.com/meshid/meshid/proxy/workload"
	"github.com/meshid/meshid/rotation"
)

// Inbound terminates mTLS on Listen and forwards plain TCP to App.
type Inbound struct {
	Listen string
	App    string
}

// Outbound accepts the app's plain TCP on Listen and forwards it with mTLS
// to Target, whose certificate must name ID (or, when ID is zero, any
// identity of the trust domain).
type Outbound struct {
	Listen string
	Target string
	ID     spiffeid.ID
}

// Config configures a Proxy.
type Config struct {
	// TrustDomain of the workload and its peers. Required.
	TrustDomain spiffeid.TrustDomain
	// CA is the meshid-ca address (host:port). Required.
	CA string
	// CAID is the identity the CA must present. Required.
	CAID spiffeid.ID
	// TokenFile holds the service-account token; it is read again for every
	// request, as kubelet rotates it. Required unless External is set.
	TokenFile string
	// External makes the proxy an ExternalWorkload's (external.go): no
	// service-account token, a join token and a state dir instead; nil
	// means a pod's proxy.
	External *External
	// BundleFile holds the PEM trust anchors. Required: it is how the proxy
	// trusts the CA before the CA can tell it anything.
	BundleFile string
	// Inbound and Outbound are the listeners.
	Inbound  []Inbound
	Outbound []Outbound
	// Transparent turns on the listeners meshid-init redirects the pod's
	// TCP to; nil means none (Inbound and Outbound only).
	Transparent *Transparent
	// PolicyFile is the YAML policy (see package policy); empty means every
	// inbound port is deny-all except DefaultMode.
	PolicyFile string
	// DefaultMode applies to every inbound port when there is no PolicyFile
	// (and, with PolicyFromCA, to ports no AuthorizationPolicy names); empty
	// means policy.Deny.
	DefaultMode policy.Mode
	// PolicyFromCA takes the policy from the CA's WatchPolicy stream (the
	// AuthorizationPolicies that select Pod) instead of a file.
	PolicyFromCA bool
	// Pod is this proxy's pod name, for PolicyFromCA.
	Pod string
	// PollInterval is how often the bundle, policy and token files are
	// checked for changes; 0 means 2 s.
	PollInterval time.Duration
	// WorkloadAPI is a Unix socket path for the SPIFFE Workload API; empty
	// means none.
	WorkloadAPI string
	// WorkloadAPIAllow are the callers the Workload API admits (see
	// workload.Allow); empty admits whoever can open the socket.
	WorkloadAPIAllow []workload.Allow
	// AdminListen serves /metrics, /ready, /live and /identity; empty means none.
	AdminListen string
	// AdminExtra are more admin handlers by mux pattern (pprof, say).
	AdminExtra map[string]http.Handler
	// HandshakeTimeout bounds a TLS handshake and the dial to the app; 0
	// means 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a forwarded connection with no traffic either way
	// for this long; 0 means 1 h.
	IdleTimeout time.Duration
	// DrainTimeout is how long Run waits for open connections after ctx
	// ends before closing them; 0 means 5 s.
	DrainTimeout time.Duration
	// MaxConnections bounds the connections open at once, per direction;
	// more wait in the kernel's accept queue. 0 means 10,000.
	MaxConnections int
	// Log receives everything the proxy logs; nil discards.
	Log *slog.Logger
	// Clock tells the time (certificate checks, readiness) and paces
	// renewals, retries, heartbeats and file polls; nil means the real clock.
	Clock clock.WithTicker
}

// Validate reports every problem with c, in terms of the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.TrustDomain.IsZero() {
		errs = append(errs, errors.New("a trust domain is required (--trust-domain)"))
	}
	if c.CA == "" {
		errs = append(errs, errors.New("the CA address is required (--ca)"))
	}
	if c.CAID.IsZero() {
		errs = append(errs, errors.New("the CA's SPIFFE ID is required (--ca-id)"))
	}
	switch {
	case c.External != nil && c.TokenFile != "":
		errs = append(errs, errors.New("--external-workload needs no service-account token: drop --token-file"))
	case c.External != nil:
		errs = append(errs, c.External.validate()...)
	case c.TokenFile == "":
		errs = append(errs, errors.New("a service-account token file is required (--token-file)"))
	}
	if c.BundleFile == "" {
		errs = append(errs, errors.New("a trust bundle file is required (--trust-bundle-file)"))
	}
	if len(c.WorkloadAPIAllow) > 0 && c.WorkloadAPI == "" {
		errs = append(errs, errors.New("--workload-api-allow needs --workload-api"))
	}
	for _, in := range c.Inbound {
		if _, err := listenPort(in.Listen); err != nil || in.App == "" {
			errs = append(errs, fmt.Errorf("--inbound %s=%s: want LISTEN=APP_ADDR with a numeric listen port", in.Listen, in.App))
		}
	}
	for _, out := range c.Outbound {
		if out.Listen == "" || out.Target == "" {
			errs = append(errs, fmt.Errorf("--outbound %s=%s: want LISTEN=TARGET[,id=SPIFFE_ID]", out.Listen, out.Target))
		}
	}
	if t := c.Transparent; t != nil {
		if err := t.Egress.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--egress: %w", err))
		}
		for _, pr := range t.Probes {
			if pr.Port < 1 || pr.Port > 65535 || !strings.HasPrefix(pr.Path, "/") {
				errs = append(errs, fmt.Errorf("--probe %d%s: want PORT/PATH, the path starting with /", pr.Port, pr.Path))
			}
		}
	}
	if err := c.DefaultMode.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--default-mode: %w", err))
	}
	if c.PolicyFromCA && (c.PolicyFile != "" || c.Pod == "") {
		errs = append(errs, errors.New("--policy-from-ca needs --pod-name (the downward API gives it), and excludes --policy"))
	}
	if c.PolicyFile != "" && c.DefaultMode != "" {
		errs = append(errs, errors.New("--default-mode and --policy exclude each other: set the default in the policy file (default: MODE)"))
	}
	if c.MaxConnections < 0 || c.IdleTimeout < 0 || c.DrainTimeout < 0 {
		errs = append(errs, errors.New("--max-connections, --idle-timeout and --drain-timeout must not be negative"))
	}
	return errors.Join(errs...)
}

func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// Proxy is one meshid-proxy.
type Proxy struct {
	cfg      Config
	store    *state.Store
	policy   atomic.Pointer[policy.Policy]
	metrics  *metrics
	log      *slog.Logger
	conns    *connSet
	renewer  *rotation.Renewer
	instance string // names this process in status reports
	// lastPolicy is the policy file content in force, so an unchanged file
	// is not loaded twice.
	lastPolicy atomic.Pointer[[]byte]
	tlsCache   tlsConfigs
	// dests is the discovery cache Run made; nil when not transparent or
	// when Transparent.Destinations was given.
	dests    *Destinations
	requests requestLayer // ports with request rules (requests.go)
}

// New returns a Proxy, or an error if cfg is invalid.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 10000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Transparent != nil {
		t := *cfg.Transparent
		t.withDefaults()
		cfg.Transparent = &t
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	p := &Proxy{cfg: cfg, store: state.NewStore(cfg.TrustDomain), log: cfg.Log, conns: newConnSet(), instance: newInstance()}
	p.metrics = newMetrics(p.store)
	mode := cfg.DefaultMode
	if mode == "" {
		mode = policy.Deny
	}
	p.policy.Store(policy.Default(cfg.TrustDomain, mode))
	return p, nil
}

// Run serves until ctx ends and returns nil then; it returns an error at
// once when the bundle file or a listener cannot be used.
func (p *Proxy) Run(ctx context.Context) error {
	// The first bundle comes from the file, and must be good: it is how
	// the CA itself is trusted.
	data, err := poll.Read(map[string]string{"bundle": p.cfg.BundleFile})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	first, err := bundle.Parse(data["bundle"])
	if err != nil {
		return fmt.Errorf("proxy: --trust-bundle-file %s: %w", p.cfg.BundleFile, err)
	}
	p.store.SetBundle(first)
	if p.cfg.PolicyFile != "" {
		if err := p.loadPolicy(); err != nil {
			return err
		}
	}

	conn, err := rotation.DialCA(p.cfg.CA, p.store, p.cfg.CAID)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := identityv1.NewIdentityClient(conn)
	rc := rotation.RenewerConfig{Client: client, Token: p.readToken, Update: p.store.SetSVID}
	if p.cfg.External != nil {
		p.startExternal(&rc, client)
	}
	p.renewer, err = rotation.NewRenewer(rotation.RenewerConfig{
		Client: rc.Client,
		Token:  rc.Token,
		Obtain: rc.Obtain,
		Update: rc.Update,
		Skew:   func(d time.Duration) { p.metrics.skew.Set(d.Seconds()) },
		Check: func(i *rotation.Issued) error {
			_, _, err := x509svid.Verify(i.SVID.Certificates, p.store, x509svid.WithTime(p.cfg.Clock.Now()))
			if err != nil {
				return fmt.Errorf("proxy: the new certificate does not chain to the trust bundle in force: %w", err)
			}
			return nil
		},
		Result: func(err error) {
			if err != nil {
				p.metrics.renewals.WithLabelValues("failed").Inc()
			} else {
				p.metrics.renewals.WithLabelValues("ok").Inc()
			}
		},
		Held:  func() bool { _, err := p.store.GetX509SVID(); return err == nil },
		Log:   p.log,
		Clock: p.cfg.Clock,
	})
	if err != nil {
		return err
	}
	listeners, err := p.listen()
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.renewer.Run(ctx) })
	g.Go(func() error { return p.watchBundleFile(ctx) })
	g.Go(func() error { return p.watchBundleStream(ctx, client) })
	g.Go(func() error { return p.report(ctx) })
	if p.cfg.PolicyFromCA {
		g.Go(func() error { return p.watchPolicyStream(ctx) })
	}
	if t := p.cfg.Transparent; t != nil && t.Destinations == nil {
		dests, err := NewDestinations(DestinationsConfig{Open: p.openDiscovery, Log: p.log, Clock: p.cfg.Clock})
		if err != nil {
			return err
		}
		t.Destinations, p.dests = dests, dests
		p.metrics.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshid_proxy_discovery_connected", Help: "1 while the CA's discovery stream is up and answering, else 0.",
		}, func() float64 {
			if dests.Connected() {
				return 1
			}
			return 0
		}))
		g.Go(func() error { return dests.Run(ctx) })
	}
	if p.cfg.PolicyFile != "" {
		g.Go(func() error { return p.watchPolicy(ctx) })
	}
	for _, l := range listeners {
		g.Go(func() error { return l.serve(ctx) })
	}
	if p.cfg.WorkloadAPI != "" {
		g.Go(func() error {
			api := workload.New(p.store, p.log, p.cfg.WorkloadAPIAllow)
			minter := &jwtMinter{p: p}
			defer minter.close()
			p.enableJWT(api, minter)
			return api.Serve(ctx, p.cfg.WorkloadAPI)
		})
	}
	if p.cfg.AdminListen != "" {
		g.Go(func() error { return p.serveAdmin(ctx) })
	}
	err = g.Wait()
	p.conns.drain(p.cfg.Clock, p.cfg.DrainTimeout, p.log)
	return err
}

func (p *Proxy) readToken() (string, error) {
	b, err := os.ReadFile(p.cfg.TokenFile)
	if err != nil {
		return "", fmt.Errorf("proxy: read token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
