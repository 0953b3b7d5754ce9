package install

import (
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/issuer"
)

// material loads or generates the trust material into mo and refuses any
// that does not hang together. generated says the anchor is new.
func material(o *Options, mo *manifest.Options) (generated bool, err error) {
	now := clock.RealClock{}.Now()
	if o.Clock != nil {
		now = o.Clock.Now()
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	var anchor *issuer.KeyPair
	switch {
	case o.IssuerCert != "":
		anchorPEM, err := os.ReadFile(o.AnchorCert)
		if err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		anchors, err := checkedBundle(anchorPEM, now)
		if err != nil {
			return false, fmt.Errorf("install: --anchor-cert %s: %w", o.AnchorCert, err)
		}
		certPEM, err := os.ReadFile(o.IssuerCert)
		if err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		keyPEM, err := os.ReadFile(o.IssuerKey)
		if err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		iss, err := issuer.Parse(certPEM, keyPEM)
		if err != nil {
			return false, fmt.Errorf("install: --issuer-cert/--issuer-key: %w", err)
		}
		if err := iss.Verify(anchors, now); err != nil {
			return false, fmt.Errorf("install: the issuer cannot be used with these anchors: %w", err)
		}
		mo.BundlePEM, mo.IssuerCertPEM, mo.IssuerKeyPEM = anchors.PEM(), certPEM, keyPEM
		return false, nil
	case o.AnchorCert != "": // cert-manager with the operator's anchor
		certPEM, err := os.ReadFile(o.AnchorCert)
		if err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		keyPEM, err := os.ReadFile(o.AnchorKey)
		if err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		if anchor, err = issuer.Parse(certPEM, keyPEM); err != nil {
			return false, fmt.Errorf("install: --anchor-cert/--anchor-key: %w", err)
		}
		if _, err := checkedBundle(bundle.Encode(anchor.Certificates()[:1]), now); err != nil {
			return false, fmt.Errorf("install: --anchor-cert %s: %w", o.AnchorCert, err)
		}
	default:
		ttl := o.AnchorTTL
		if ttl == 0 {
			ttl = 3650 * 24 * time.Hour
		}
		if anchor, err = issuer.NewAnchor(issuer.CAParams{CommonName: "meshid trust anchor", NotBefore: now.Add(-time.Hour), TTL: ttl}); err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		generated = true
		fmt.Fprintf(stderr, "meshid install: GENERATED A NEW TRUST ANCHOR %q, valid until %s\n", anchor.Cert.Subject.CommonName, anchor.Cert.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stderr, "meshid install: anchor SHA-256 fingerprint %s\n", anchor.Fingerprint())
		if o.WriteAnchorKey != "" {
			key, err := anchor.KeyPEM()
			if err != nil {
				return false, err
			}
			if err := output.WriteFile(o.WriteAnchorKey, key, 0o600); err != nil {
				return false, err
			}
			fmt.Fprintf(stderr, "meshid install: the anchor's private key is in %s (mode 0600): keep it offline\n", o.WriteAnchorKey)
		} else if !o.CertManager {
			fmt.Fprintln(stderr, "meshid install: the anchor's private key is discarded (--write-anchor-key keeps it); a new issuer will need a new anchor, via meshid rotate-anchor")
		}
	}
	mo.BundlePEM = bundle.Encode(anchor.Certificates()[:1])
	if o.CertManager {
		key, err := anchor.KeyPEM()
		if err != nil {
			return false, err
		}
		mo.CertManager = &manifest.CertManager{AnchorCertPEM: mo.BundlePEM, AnchorKeyPEM: key}
		return generated, nil
	}
	ttl := o.IssuerTTL
	if ttl == 0 {
		ttl = 90 * 24 * time.Hour
	}
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "meshid issuer", NotBefore: now.Add(-time.Hour), TTL: ttl, MaxPathLenZero: true})
	if err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	mo.IssuerCertPEM = iss.CertPEM()
	if mo.IssuerKeyPEM, err = iss.KeyPEM(); err != nil {
		return false, err
	}
	return generated, nil
}

// checkedBundle parses anchors and refuses expired or not yet valid ones.
func checkedBundle(data []byte, now time.Time) (*bundle.Bundle, error) {
	b, err := bundle.Parse(data)
	if err != nil {
		return nil, err
	}
	for _, a := range b.Anchors() {
		if now.After(a.NotAfter) || now.Before(a.NotBefore) {
			return nil, fmt.Errorf("anchor %s is not valid now (%s to %s)", a.Subject, a.NotBefore.UTC().Format(time.RFC3339), a.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return b, nil
}
