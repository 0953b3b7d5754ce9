package anchor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
)

// Leftovers is what a forced abort leaves in the cluster, as it found it:
// it changes nothing but the rotation state.
type Leftovers struct {
	// StateRemoved says a state was there and is removed.
	StateRemoved bool `json:"state_removed"`
	// Removed is the stage of the rotation whose state was removed ("" when
	// the state did not parse).
	Removed Stage `json:"removed_stage,omitempty"`
	// Bundle is the trust bundle ConfigMap as published.
	Bundle BundleLeft `json:"bundle"`
	// Issuer is the issuer Secret.
	Issuer IssuerLeft `json:"issuer"`
	// CertManagerAnchor is the anchor cert-manager issues the issuer from
	// (Secret manifest.AnchorSecret), for a rotation in cert-manager mode;
	// nil otherwise or when it cannot be read.
	CertManagerAnchor *AnchorLeft `json:"cert_manager_anchor,omitempty"`
	// KeysSecret names the Secret with the rotation's saved keys, and Keys
	// the keys it holds (none when it is gone); it is kept.
	KeysSecret string   `json:"keys_secret"`
	Keys       []string `json:"saved_keys,omitempty"`
}

// BundleLeft is the published bundle.
type BundleLeft struct {
	// ConfigMap is namespace/name; SHA256 the bundle's digest; Problem says
	// why it could not be read ("" when it was).
	ConfigMap string `json:"configmap"`
	SHA256    string `json:"sha256,omitempty"`
	Problem   string `json:"problem,omitempty"`
	// Anchors are the anchors it holds.
	Anchors []AnchorLeft `json:"anchors,omitempty"`
	// ReissueWindow is the re-issue window still set on it ("" for none):
	// proxies renew early while it is.
	ReissueWindow string `json:"reissue_window,omitempty"`
}

// AnchorLeft is one anchor, and which side of the rotation it is.
type AnchorLeft struct {
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
	// Role is "old" (in the bundle from before the rotation), "new" (the
	// rotation's new anchor), or "" when the state did not say.
	Role     string    `json:"role,omitempty"`
	NotAfter time.Time `json:"not_after"`
}

// IssuerLeft is the issuer in the issuer Secret.
type IssuerLeft struct {
	Secret   string    `json:"secret"`
	Subject  string    `json:"subject,omitempty"`
	SHA256   string    `json:"sha256,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// ChainsTo names the published anchor it chains to, with its Role
	// ("new anchor 0123abcd4567"), or says "none of the published anchors".
	ChainsTo string `json:"chains_to,omitempty"`
	Problem  string `json:"problem,omitempty"`
}

// ForceAbort removes the stored rotation state, whatever its stage or
// shape, and changes nothing else: the bundle, the issuer and the Secret
// of saved keys stay as they are, and Leftovers says what they are. It is
// the way out of a rotation that neither resume nor abort can finish; a
// run still going stops at its next save.
func (r *Rotator) ForceAbort(ctx context.Context) (*Leftovers, error) {
	ns := r.cfg.Namespace
	cms := r.cfg.Client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, StateConfigMap, metav1.GetOptions{})
	found := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("anchor: read the rotation state: %w", err)
	}
	var st *State
	if found {
		st, _ = unmarshalState(cm.Data[StateKey]) // a state that does not parse is removed all the same
	}
	left := &Leftovers{StateRemoved: found, KeysSecret: ns + "/" + KeysSecret}
	if st != nil {
		left.Removed = st.Stage
	}
	keys, err := r.loadKeys(ctx)
	if err != nil {
		return nil, err
	}
	left.Keys = keys.names()
	if !found && len(left.Keys) == 0 {
		return nil, errors.New("anchor: no rotation is stored: nothing to abort")
	}
	if found {
		err := cms.Delete(ctx, StateConfigMap, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr.To(cm.ResourceVersion)}})
		switch {
		case apierrors.IsConflict(err):
			return nil, errors.New("anchor: the rotation state changed while it was being removed: another meshid rotate-anchor is running (see status); stop it, then abort --force again")
		case err != nil && !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("anchor: remove the rotation state (ConfigMap %s/%s): %w", ns, StateConfigMap, err)
		}
	}
	var role func(*x509.Certificate) string
	left.Bundle, left.Issuer, role = r.describeTrust(ctx, st)
	if st != nil && st.CertManager {
		if s, err := r.cfg.Client.CoreV1().Secrets(ns).Get(ctx, manifest.AnchorSecret, metav1.GetOptions{}); err == nil {
			if b, err := bundle.Parse(s.Data[corev1.TLSCertKey]); err == nil {
				c := b.Anchors()[0]
				left.CertManagerAnchor = &AnchorLeft{Subject: c.Subject.String(), SHA256: bundle.Fingerprint(c), Role: role(c), NotAfter: c.NotAfter}
			}
		}
	}
	return left, nil
}

// describeTrust reads the bundle and the issuer in place, naming each
// anchor by its side in st (nil: unknown), and returns how it names them.
func (r *Rotator) describeTrust(ctx context.Context, st *State) (BundleLeft, IssuerLeft, func(*x509.Certificate) string) {
	ns := r.cfg.Namespace
	b := BundleLeft{ConfigMap: ns + "/" + manifest.BundleConfigMap}
	role := func(*x509.Certificate) string { return "" }
	if st != nil {
		old, _ := bundle.Parse([]byte(st.OldBundle))
		next, _ := bundle.Parse([]byte(st.NewAnchor))
		role = func(c *x509.Certificate) string {
			switch {
			case next != nil && next.Contains(c):
				return "new"
			case old != nil && old.Contains(c):
				return "old"
			}
			return ""
		}
	}
	var published *bundle.Bundle
	cm, err := r.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err == nil {
		b.ReissueWindow = cm.Data[bundle.ReissueWindowKey]
		published, err = bundle.Parse([]byte(cm.Data[bundle.Key]))
	}
	if err != nil {
		b.Problem = err.Error()
	} else {
		b.SHA256 = published.SHA256()
		for _, c := range published.Anchors() {
			b.Anchors = append(b.Anchors, AnchorLeft{Subject: c.Subject.String(), SHA256: bundle.Fingerprint(c), Role: role(c), NotAfter: c.NotAfter})
		}
	}

	iss := IssuerLeft{Secret: ns + "/" + manifest.IssuerSecret}
	s, err := r.cfg.Client.CoreV1().Secrets(ns).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
	var kp *issuer.KeyPair
	if err == nil {
		kp, err = issuer.Parse(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	}
	if err != nil {
		iss.Problem = err.Error()
		return b, iss, role
	}
	iss.Subject, iss.SHA256, iss.NotAfter = kp.Cert.Subject.String(), kp.Fingerprint(), kp.Cert.NotAfter
	iss.ChainsTo = "none of the published anchors"
	if published != nil {
		for _, c := range published.Anchors() {
			one, err := bundle.Parse(bundle.Encode([]*x509.Certificate{c}))
			if err == nil && kp.Verify(one, r.clock.Now()) == nil {
				iss.ChainsTo = strings.TrimSpace(role(c) + " anchor " + bundle.Fingerprint(c)[:12])
				break
			}
		}
	}
	return b, iss, role
}
