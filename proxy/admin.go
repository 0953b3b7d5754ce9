package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/proxy/redirect"
)

// Identity is what /identity reports.
type Identity struct {
	SPIFFEID     string    `json:"spiffe_id"`
	Serial       string    `json:"serial"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	RenewAfter   time.Time `json:"renew_after"`
	Issuer       string    `json:"issuer"`
	IssuerSHA256 string    `json:"issuer_sha256"`
	// PublicKeySHA256 names the key: it changes at every renewal.
	PublicKeySHA256 string `json:"public_key_sha256"`
	// Chain holds the leaf and intermediates as PEM, so a checker can
	// verify them against the bundle it expects.
	Chain        string `json:"chain_pem"`
	BundleSHA256 string `json:"bundle_sha256"`
	Anchors      int    `json:"anchors"`
	Policy       string `json:"policy"`
	Ready        bool   `json:"ready"`
	NotReady     string `json:"not_ready,omitempty"`
	// Redirect is how the pod's traffic reaches the proxy.
	Redirect Redirection `json:"redirect"`
	// Discovery is the destination cache's freshness; nil unless the
	// proxy is transparent with the CA's discovery stream.
	Discovery *DiscoveryStatus `json:"discovery,omitempty"`
}

// Redirection modes.
const (
	ModeTransparent = "transparent" // meshid-init redirects the pod's TCP (--transparent)
	ModeExplicit    = "explicit"    // only the --inbound and --outbound listeners
)

// Redirection is the redirect's state as /identity shows it. The proxy
// cannot read nftables (that takes CAP_NET_ADMIN, which only meshid-init
// holds): what it shows is what meshid-init programmed and read back when
// the pod started, from Transparent.RedirectStateFile.
type Redirection struct {
	Mode string `json:"mode"`
	// Inbound and Outbound are the explicit listeners' addresses.
	Inbound  []string `json:"inbound,omitempty"`
	Outbound []string `json:"outbound,omitempty"`
	// The rest is for ModeTransparent only.
	StateFile string `json:"state_file,omitempty"`
	// Present: meshid-init found its table when it read it back; Matching:
	// the table held the rule set meshid-init meant, and that rule set
	// sends to this proxy's listeners.
	Present           bool      `json:"present"`
	Matching          bool      `json:"matching"`
	CheckedAt         time.Time `json:"checked_at,omitzero"`
	InboundPort       uint16    `json:"inbound_port,omitempty"`
	OutboundPort      uint16    `json:"outbound_port,omitempty"`
	SkipInboundPorts  []uint16  `json:"skip_inbound_ports,omitempty"`
	SkipOutboundPorts []uint16  `json:"skip_outbound_ports,omitempty"`
	SkipOutboundCIDRs []string  `json:"skip_outbound_cidrs,omitempty"`
	// Problem says why Present or Matching is false.
	Problem string `json:"problem,omitempty"`
}

// redirection reads the redirect's state.
func (p *Proxy) redirection() Redirection {
	r := Redirection{Mode: ModeExplicit}
	for _, in := range p.cfg.Inbound {
		r.Inbound = append(r.Inbound, in.Listen)
	}
	for _, out := range p.cfg.Outbound {
		r.Outbound = append(r.Outbound, out.Listen)
	}
	t := p.cfg.Transparent
	if t == nil {
		return r
	}
	r.Mode, r.StateFile = ModeTransparent, t.RedirectStateFile
	if t.RedirectStateFile == "" {
		r.Problem = "unknown: no --redirect-state-file (meshid-init's --state-file) was given"
		return r
	}
	s, err := redirect.ReadState(t.RedirectStateFile)
	if err != nil {
		r.Problem = err.Error()
		return r
	}
	r.Present, r.Matching, r.CheckedAt, r.Problem = s.Present, s.Matching, s.CheckedAt, s.Problem
	r.InboundPort, r.OutboundPort = s.InboundPort, s.OutboundPort
	r.SkipInboundPorts, r.SkipOutboundPorts, r.SkipOutboundCIDRs = s.SkipInboundPorts, s.SkipOutboundPorts, s.SkipOutboundCIDRs
	in, _ := listenPort(t.InboundListen)
	out := redirect.DefaultOutboundPort
	if t.OutboundListen != "" {
		out, _ = listenPort(t.OutboundListen)
	}
	if r.Matching && (int(s.InboundPort) != in || int(s.OutboundPort) != out) {
		r.Matching = false
		r.Problem = fmt.Sprintf("meshid-init redirects to ports %d (inbound) and %d (outbound), but the proxy listens on %d and %d", s.InboundPort, s.OutboundPort, in, out)
	}
	return r
}

// discoveryNotReady says why the destination cache keeps the proxy from
// being ready; empty when it does not.
func (p *Proxy) discoveryNotReady() string {
	if p.dests == nil {
		return ""
	}
	if st := p.dests.Status(); !st.Fresh {
		if st.BrokeAt.IsZero() {
			return "the CA's discovery stream has not said its informers synced yet"
		}
		return fmt.Sprintf("the CA's discovery stream has been down since %s, longer than %s: destinations are unknown", st.BrokeAt.UTC().Format(time.RFC3339), st.MaxStale)
	}
	return ""
}

func (p *Proxy) identity() Identity {
	snap := p.store.Load()
	var id Identity
	if err := p.ready(); err != nil {
		id.NotReady = err.Error()
	} else {
		id.Ready = true
	}
	id.Redirect = p.redirection()
	if p.dests != nil {
		st := p.dests.Status()
		id.Discovery = &st
	}
	if snap.SVID != nil {
		leaf := snap.SVID.Certificates[0]
		id.SPIFFEID = snap.SVID.ID.String()
		id.Serial = leaf.SerialNumber.Text(16)
		id.NotBefore, id.NotAfter, id.RenewAfter = leaf.NotBefore, leaf.NotAfter, snap.RenewAfter
		id.Issuer = leaf.Issuer.String()
		sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		id.PublicKeySHA256 = hex.EncodeToString(sum[:])
		if len(snap.SVID.Certificates) > 1 {
			id.IssuerSHA256 = bundle.Fingerprint(snap.SVID.Certificates[1])
		}
		id.Chain = string(bundle.Encode(snap.SVID.Certificates))
	}
	if snap.Bundle != nil {
		id.BundleSHA256, id.Anchors = snap.Bundle.SHA256(), len(snap.Bundle.Anchors())
	}
	id.Policy = p.policy.Load().Source
	return id
}

// ready is nil when the proxy holds a valid certificate and, when
// transparent, its destination cache is fresh.
func (p *Proxy) ready() error {
	if err := p.store.Load().Ready(p.cfg.Clock.Now()); err != nil {
		return err
	}
	if why := p.discoveryNotReady(); why != "" {
		return errors.New("proxy: " + why)
	}
	return nil
}

func (p *Proxy) serveAdmin(ctx context.Context) error {
	mux := http.NewServeMux()
	for pattern, h := range p.cfg.AdminExtra {
		mux.Handle(pattern, h)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.registry, promhttp.HandlerOpts{Registry: p.metrics.registry}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /identity", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.identity())
	})
	lis, err := net.Listen("tcp", p.cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("proxy: admin %s: %w", p.cfg.AdminListen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	p.log.Info("serving admin endpoints", "address", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy: admin: %w", err)
	}
	return nil
}
