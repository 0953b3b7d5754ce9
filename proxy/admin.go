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
}

func (p *Proxy) identity() Identity {
	snap := p.store.Load()
	var id Identity
	if err := snap.Ready(p.cfg.Clock.Now()); err != nil {
		id.NotReady = err.Error()
	} else {
		id.Ready = true
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

func (p *Proxy) serveAdmin(ctx context.Context) error {
	mux := http.NewServeMux()
	for pattern, h := range p.cfg.AdminExtra {
		mux.Handle(pattern, h)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.registry, promhttp.HandlerOpts{Registry: p.metrics.registry}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.store.Load().Ready(p.cfg.Clock.Now()); err != nil {
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
