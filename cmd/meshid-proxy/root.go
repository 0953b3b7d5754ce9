package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/proxy"
	"github.com/meshid/meshid/proxy/workload"
	"github.com/meshid/meshid/sidecar"
)

type options struct {
	ca, caID, trustDomain    string
	tokenFile, bundleFile    string
	inbound, outbound        []string
	policyFile, defaultMode  string
	pollInterval             time.Duration
	idleTimeout, drain       time.Duration
	handshakeTimeout         time.Duration
	maxConnections           int
	policyFromCA             bool
	pod                      string
	transparent              bool
	egress, nodeIP           string
	redirectState            string
	probes                   []string
	workloadAPI, adminListen string
	workloadAPIAllow         []string
	external, joinTokenFile  string
	stateDir                 string
	profiling                bool
	log                      cli.LogOptions
}

// config checks the options and turns them into a proxy.Config, less the
// logger.
func (o *options) config() (proxy.Config, error) {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return proxy.Config{}, cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
	}
	cfg := proxy.Config{
		TrustDomain: td, CA: o.ca, TokenFile: o.tokenFile, BundleFile: o.bundleFile,
		PolicyFile: o.policyFile, DefaultMode: policy.Mode(o.defaultMode), PollInterval: o.pollInterval,
		PolicyFromCA: o.policyFromCA, Pod: o.pod,
		AdminListen: o.adminListen, AdminExtra: cli.ProfilingHandlers(o.profiling), IdleTimeout: o.idleTimeout, HandshakeTimeout: o.handshakeTimeout, DrainTimeout: o.drain, MaxConnections: o.maxConnections,
	}
	if cfg.CAID, err = cli.CAID(o.caID, td); err != nil {
		return proxy.Config{}, err
	}
	if o.external != "" {
		ns, name, _ := strings.Cut(o.external, "/")
		cfg.External = &proxy.External{Namespace: ns, Name: name, JoinTokenFile: o.joinTokenFile, StateDir: o.stateDir}
		if o.tokenFile == defaultTokenFile {
			cfg.TokenFile = "" // the pod's default; an external workload has none
		}
	} else if o.joinTokenFile != "" {
		return proxy.Config{}, cli.Usagef("--join-token-file needs --external-workload NAMESPACE/NAME")
	}
	if o.workloadAPI != "" {
		path, ok := strings.CutPrefix(o.workloadAPI, "unix://")
		if !ok || path == "" {
			return proxy.Config{}, cli.Usagef("--workload-api %q: want unix:///PATH", o.workloadAPI)
		}
		cfg.WorkloadAPI = path
	}
	for _, r := range o.workloadAPIAllow {
		a, err := workload.ParseAllow(r)
		if err != nil {
			return proxy.Config{}, cli.Usagef("--workload-api-allow: %v", cli.Message(err))
		}
		cfg.WorkloadAPIAllow = append(cfg.WorkloadAPIAllow, a)
	}
	if o.transparent {
		t := &proxy.Transparent{Egress: proxy.Egress(o.egress), RedirectStateFile: o.redirectState}
		if o.nodeIP != "" {
			if t.Node, err = netip.ParseAddr(o.nodeIP); err != nil {
				return proxy.Config{}, cli.Usagef("--node-ip %q: want an IP address (the downward API's status.hostIP)", o.nodeIP)
			}
		}
		for _, s := range o.probes {
			port, path, ok := strings.Cut(s, "=")
			n, err := strconv.Atoi(port)
			if !ok || err != nil {
				return proxy.Config{}, cli.Usagef("--probe %q: want PORT=PATH, e.g. 8080=/healthz", s)
			}
			t.Probes = append(t.Probes, proxy.Probe{Port: n, Path: path})
		}
		cfg.Transparent = t
	} else if o.egress != "" || len(o.probes) > 0 || o.redirectState != "" {
		return proxy.Config{}, cli.Usagef("--egress, --probe and --redirect-state-file need --transparent")
	}
	for _, s := range o.inbound {
		listen, app, ok := strings.Cut(s, "=")
		if !ok {
			return proxy.Config{}, cli.Usagef("--inbound %q: want LISTEN=APP_ADDR, e.g. :8443=127.0.0.1:8080", s)
		}
		cfg.Inbound = append(cfg.Inbound, proxy.Inbound{Listen: listen, App: app})
	}
	for _, s := range o.outbound {
		listen, rest, ok := strings.Cut(s, "=")
		if !ok {
			return proxy.Config{}, cli.Usagef("--outbound %q: want LISTEN=TARGET[,id=SPIFFE_ID], e.g. 127.0.0.1:9000=db.shop.svc:8443,id=spiffe://cluster.local/ns/shop/sa/db", s)
		}
		target, opt, _ := strings.Cut(rest, ",")
		if host, port, err := net.SplitHostPort(target); err != nil || host == "" || port == "" {
			return proxy.Config{}, cli.Usagef("--outbound %q: target %q: want HOST:PORT, e.g. db.shop.svc:8443", s, target)
		}
		out := proxy.Outbound{Listen: listen, Target: target}
		if opt != "" {
			idStr, ok := strings.CutPrefix(opt, "id=")
			if !ok {
				return proxy.Config{}, cli.Usagef("--outbound %q: the only option is id=SPIFFE_ID", s)
			}
			if out.ID, err = spiffeid.FromString(idStr); err != nil {
				return proxy.Config{}, cli.Usagef("--outbound %q: id: %v", s, err)
			}
		}
		cfg.Outbound = append(cfg.Outbound, out)
	}
	if err := cfg.Validate(); err != nil {
		return proxy.Config{}, &cli.UsageError{Err: err}
	}
	return cfg, nil
}

// defaultTokenFile is where the injected sidecar's projected token is.
const defaultTokenFile = "/var/run/secrets/meshid/token"

func newRootCommand(run func(ctx context.Context, o *options, cmd *cobra.Command) error) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "meshid-proxy",
		Short: "mTLS sidecar: workload identity, mutual TLS, identity-based policy, SPIFFE Workload API",
		Long: strings.TrimSpace(`
meshid-proxy gives a workload its SPIFFE identity and uses it. It asks
meshid-ca for a certificate with the service-account token in --token-file
(a fresh key each time, kept in memory), renews it when the CA says, and keeps
the trust bundle current from --trust-bundle-file and the CA's stream.

  --inbound  LISTEN=APP       terminate mTLS (TLS 1.3) on LISTEN, authorize the
                              peer by --policy, forward plain TCP to APP
  --outbound LISTEN=TARGET[,id=SPIFFE_ID]
                              accept the app's plain TCP on LISTEN, dial TARGET
                              with mTLS, and require the server to be SPIFFE_ID
                              (any ID of the trust domain when omitted)
  --workload-api unix:///P    serve the SPIFFE Workload API on socket P
  --workload-api-allow uid=N,gid=N,path=/EXE,sha256=HEX
                              admit only callers whose peer credentials
                              (SO_PEERCRED) and executable match a rule (all
                              keys given must match; repeat for several);
                              others get PERMISSION_DENIED. path and sha256
                              need root or CAP_SYS_PTRACE to read another
                              user's /proc/PID/exe
  --external-workload NS/NAME run on a machine outside the cluster as that
                              ExternalWorkload: the first certificate comes
                              from --join-token-file (meshid workload join),
                              renewals are proved by the current certificate
                              (mTLS), and both key and certificate are kept in
                              --state-dir; no service-account token
  --transparent               serve the listeners meshid-init redirects the
                              pod's TCP to (:15006 inbound, 127.0.0.1:15001
                              outbound): mTLS to and from every meshed pod,
                              the peer's identity from the CA's discovery
                              stream, plain to unmeshed destinations unless
                              --egress deny-unmeshed; --probe PORT=PATH admits
                              the kubelet's plain probes from --node-ip;
                              --redirect-state-file shows on /identity what
                              meshid-init programmed and read back (the proxy
                              cannot read nftables: that takes NET_ADMIN)

The policy file (YAML, re-read every --poll-interval; a bad version is refused
and the last good one stays) sets a mode per inbound listen port - deny,
all-authenticated, cluster-authenticated, all-unauthenticated - and allow rules:

  default: deny
  ports:
  - port: 8443
    mode: deny
    allow:
    - id: spiffe://cluster.local/ns/shop/sa/web
    - serviceAccount: shop/checkout
    - namespace: monitoring
    - pattern: spiffe://cluster.local/ns/*/sa/prometheus

/metrics, /ready (a valid certificate is held and, with --transparent, the
CA's discovery stream has synced and is not stale), /live and /identity (the
certificate, bundle, policy, redirect and discovery state) are on
--admin-listen.

` + cli.ExitCodes),
		Example: `  meshid-proxy --ca meshid-ca.meshid.svc:8443 \
    --token-file /var/run/secrets/meshid/token --trust-bundle-file /etc/meshid/ca-bundle.crt \
    --inbound :8443=127.0.0.1:8080 --policy /etc/meshid/policy.yaml \
    --outbound 127.0.0.1:9000=db.shop.svc:8443,id=spiffe://cluster.local/ns/shop/sa/db`,
		Args: cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			_, err := o.config()
			return err
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), o, cmd) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.ca, "ca", "meshid-ca.meshid.svc:8443", "meshid-ca gRPC address, or several replicas' addresses separated by commas (used round-robin, with failover)")
	cli.AddCAIDFlag(fs, &o.caID)
	fs.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&o.tokenFile, "token-file", defaultTokenFile, "projected service-account token (audience identity.meshid.dev), re-read for every request")
	fs.StringVar(&o.external, "external-workload", "", "NAMESPACE/NAME: run outside the cluster as this ExternalWorkload, with --join-token-file and --state-dir instead of a service-account token")
	fs.StringVar(&o.joinTokenFile, "join-token-file", "", "with --external-workload: the one-time join token meshid workload join printed; read when no valid certificate is held")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/meshid-proxy", "with --external-workload: where the key (0600) and certificate are kept across restarts")
	fs.StringVar(&o.bundleFile, "trust-bundle-file", "/var/run/meshid/ca-bundle.crt", "PEM trust anchors; re-read for changes")
	fs.StringArrayVar(&o.inbound, "inbound", nil, "LISTEN=APP_ADDR (repeatable)")
	fs.StringArrayVar(&o.outbound, "outbound", nil, "LISTEN=TARGET[,id=SPIFFE_ID] (repeatable)")
	fs.StringVar(&o.policyFile, "policy", "", "YAML policy file, hot-reloaded")
	fs.BoolVar(&o.policyFromCA, "policy-from-ca", false, "take the policy from the AuthorizationPolicies that select this pod, streamed by the CA")
	fs.StringVar(&o.pod, "pod-name", os.Getenv("POD_NAME"), "this pod's name, for --policy-from-ca (default $POD_NAME)")
	fs.BoolVar(&o.transparent, "transparent", false, "serve the transparent listeners meshid-init redirects the pod's TCP to (:15006 inbound, 127.0.0.1:15001 and [::1]:15001 outbound)")
	fs.StringVar(&o.egress, "egress", "", "with --transparent: allow-unmeshed (default: plain to destinations outside the mesh) or deny-unmeshed")
	fs.StringArrayVar(&o.probes, "probe", nil, "with --transparent: PORT=PATH of an HTTP probe the kubelet may make in plain from --node-ip (repeatable)")
	fs.StringVar(&o.nodeIP, "node-ip", os.Getenv("HOST_IP"), "with --transparent: the node's address, where probes come from (default $HOST_IP)")
	fs.StringVar(&o.redirectState, "redirect-state-file", "", "with --transparent: meshid-init's --state-file, shown on /identity")
	fs.StringVar(&o.defaultMode, "default-mode", "", "mode of every inbound port when there is no --policy (default deny)")
	fs.DurationVar(&o.pollInterval, "poll-interval", 2*time.Second, "how often the bundle and policy files are checked for changes")
	fs.StringVar(&o.workloadAPI, "workload-api", "", "serve the SPIFFE Workload API on unix:///PATH")
	fs.StringArrayVar(&o.workloadAPIAllow, "workload-api-allow", nil, "with --workload-api: uid=N,gid=N,path=/EXE,sha256=HEX, a caller the Workload API admits (repeatable; default: whoever can open the socket)")
	fs.StringVar(&o.adminListen, "admin-listen", ":"+strconv.Itoa(sidecar.AdminPort), "address of /metrics, /ready, /live and /identity (kubelet probes and Prometheus reach it on the pod IP); empty disables them")
	cli.ProfilingFlag(fs, &o.profiling)
	fs.DurationVar(&o.idleTimeout, "idle-timeout", time.Hour, "close a forwarded connection idle both ways for this long")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "time a peer has to finish its TLS handshake (and to reach the app); a slower one is closed")
	fs.DurationVar(&o.drain, "drain-timeout", 5*time.Second, "on SIGTERM, how long open connections may finish before they are closed")
	fs.IntVar(&o.maxConnections, "max-connections", 10000, "connections open at once per listener; more wait to be accepted")
	o.log.AddFlags(fs)
	cli.Setup(cmd)
	return cmd
}

func run(ctx context.Context, o *options, cmd *cobra.Command) error {
	log, err := o.log.Logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	cfg.Log = log
	cli.LogStart(log, "meshid-proxy")
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("meshid-proxy: %w", err)
	}
	log.Info("meshid-proxy stopped")
	return nil
}
