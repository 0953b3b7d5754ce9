package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/poll"
	"github.com/meshid/meshid/rotation"
)

// setBundle installs a bundle from source ("file" or "ca"), or refuses it
// and keeps the last good one.
func (p *Proxy) setBundle(source string, pem []byte) {
	b, err := bundle.Parse(pem)
	if err != nil {
		p.metrics.bundles.WithLabelValues(source, "refused").Inc()
		p.log.Error("refused a trust bundle; keeping the last good one in force", "source", source, "error", err)
		return
	}
	if !p.store.SetBundle(b) {
		p.metrics.bundles.WithLabelValues(source, "unchanged").Inc()
		return
	}
	p.metrics.bundles.WithLabelValues(source, "ok").Inc()
	p.log.Info("trust bundle loaded", "source", source, "bundle_sha256", b.SHA256(), "anchors", len(b.Anchors()))
	if svid := p.store.Load().SVID; svid != nil {
		if _, _, err := x509svid.Verify(svid.Certificates, b.X509Bundle(p.cfg.TrustDomain), x509svid.WithTime(p.cfg.Clock.Now())); err != nil {
			p.log.Warn("this proxy's own certificate does not chain to the new trust bundle; renewing now", "error", err)
			if p.renewer != nil {
				p.renewer.RenewNow()
			}
		}
	}
}

// setForeign installs the foreign trust domains' bundles the CA streamed;
// one that does not parse is left out (and said), the others are taken.
func (p *Proxy) setForeign(federated []*identityv1.FederatedBundle) {
	foreign := map[spiffeid.TrustDomain]*bundle.Bundle{}
	for _, fb := range federated {
		td, err := spiffeid.TrustDomainFromString(fb.GetTrustDomain())
		if err == nil && td == p.cfg.TrustDomain {
			err = errors.New("it is our own trust domain")
		}
		var b *bundle.Bundle
		if err == nil {
			b, err = bundle.Parse(fb.GetPem())
		}
		if err != nil {
			p.log.Error("refused a federated trust domain's bundle from the CA; peers of it are not trusted", "trust_domain", fb.GetTrustDomain(), "error", err)
			continue
		}
		foreign[td] = b
	}
	if p.store.SetForeign(foreign) {
		tds := make([]string, 0, len(foreign))
		for td := range foreign {
			tds = append(tds, td.Name())
		}
		slices.Sort(tds)
		p.log.Info("federated trust domains' bundles loaded", "trust_domains", tds)
	}
}

// watchBundleFile follows the bundle file.
func (p *Proxy) watchBundleFile(ctx context.Context) error {
	return poll.Watch(ctx, p.cfg.Clock, map[string]string{"bundle": p.cfg.BundleFile}, p.cfg.PollInterval,
		func(data map[string][]byte) { p.setBundle("file", data["bundle"]) },
		func(err error) {
			p.log.Error("cannot read the trust bundle file; keeping the last good bundle", "error", err)
		})
}

// watchBundleStream follows the CA's WatchBundle stream, reconnecting with
// capped backoff, so a new anchor reaches the proxy without a restart.
func (p *Proxy) watchBundleStream(ctx context.Context, client identityv1.IdentityClient) error {
	backoff := rotation.NewBackoff(time.Second, 30*time.Second)
	for {
		stream, err := client.WatchBundle(ctx, &identityv1.WatchBundleRequest{})
		for err == nil {
			var b *identityv1.Bundle
			if b, err = stream.Recv(); err == nil {
				backoff.Reset()
				if td, tdErr := spiffeid.TrustDomainFromString(b.GetTrustDomain()); tdErr != nil || td != p.cfg.TrustDomain {
					p.log.Error("the CA streamed a bundle for another trust domain; ignoring it", "trust_domain", b.GetTrustDomain())
					continue
				}
				p.setBundle("ca", b.GetPem())
				p.setJWTBundle(b.GetJwtAuthorities())
				p.setForeign(b.GetFederated())
				p.reissue(ctx, b.GetIssuerSha256(), time.Duration(b.GetReissueWindowSeconds())*time.Second)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff.Next()
		p.log.Warn("the CA's bundle stream broke; reconnecting", "error", err.Error(), rotation.RetryIn(wait))
		select {
		case <-ctx.Done():
			return nil
		case <-p.cfg.Clock.After(wait):
		}
	}
}

// loadPolicy reads the policy file once; an error means it was refused.
func (p *Proxy) loadPolicy() error {
	data, err := poll.Read(map[string]string{"policy": p.cfg.PolicyFile})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return p.setPolicy(data["policy"])
}

func (p *Proxy) setPolicy(data []byte) error {
	return p.setPolicyFrom(p.cfg.PolicyFile, data)
}

func (p *Proxy) setPolicyFrom(source string, data []byte) error {
	if last := p.lastPolicy.Load(); last != nil && bytes.Equal(*last, data) {
		return nil
	}
	pol, err := policy.Parse(data, p.cfg.TrustDomain)
	if err != nil {
		p.metrics.policy.WithLabelValues("refused").Inc()
		return fmt.Errorf("proxy: policy from %s: %w", source, err)
	}
	pol.Source = source
	p.closePipesGainingRules(p.policy.Swap(pol), pol)
	p.lastPolicy.Store(&data)
	p.metrics.policy.WithLabelValues("ok").Inc()
	p.log.Info("policy loaded", "source", source, "ports", pol.Ports())
	return nil
}

// watchPolicyStream follows the CA's WatchPolicy stream for this pod, over
// a connection that presents the proxy's certificate; a broken stream keeps
// the last good policy and reconnects with backoff.
func (p *Proxy) watchPolicyStream(ctx context.Context) error {
	backoff := rotation.NewBackoff(time.Second, 30*time.Second)
	for {
		if err := p.followPolicy(ctx, backoff); err != nil && ctx.Err() == nil {
			wait := backoff.Next()
			p.log.Warn("the CA's policy stream broke; the last good policy stays in force", "error", err.Error(), rotation.RetryIn(wait))
			select {
			case <-ctx.Done():
			case <-p.cfg.Clock.After(wait):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// waitCertificate returns the workload certificate once there is one, or
// ctx's error.
func (p *Proxy) waitCertificate(ctx context.Context) (*tls.Certificate, error) {
	for {
		changed := p.store.Changed()
		if cert := p.store.Load().Certificate(); cert != nil {
			return cert, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

func (p *Proxy) followPolicy(ctx context.Context, backoff *rotation.Backoff) error {
	cert, err := p.waitCertificate(ctx)
	if err != nil {
		return nil
	}
	conn, err := rotation.DialCA(p.cfg.CA, p.store, p.cfg.CAID, rotation.WithClientCertificate(cert))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := identityv1.NewIdentityClient(conn).WatchPolicy(ctx, &identityv1.WatchPolicyRequest{Pod: p.cfg.Pod, DefaultMode: string(p.cfg.DefaultMode)})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		backoff.Reset()
		if err := p.setPolicyFrom("ca", msg.GetYaml()); err != nil {
			p.log.Error("refused the policy the CA sent; the last good one stays in force", "error", err)
		}
	}
}

// watchPolicy follows the policy file; a bad version is refused and the
// last good policy stays.
func (p *Proxy) watchPolicy(ctx context.Context) error {
	return poll.Watch(ctx, p.cfg.Clock, map[string]string{"policy": p.cfg.PolicyFile}, p.cfg.PollInterval,
		func(data map[string][]byte) {
			if err := p.setPolicy(data["policy"]); err != nil {
				p.log.Error("refused the new policy; the last good one stays in force", "error", err)
			}
		},
		func(err error) {
			p.log.Error("cannot read the policy file; the last good policy stays in force", "error", err)
		})
}
