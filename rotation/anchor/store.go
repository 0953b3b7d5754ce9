package anchor

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
)

// load reads the stored rotation, or nil when there is none, and
// remembers its version: save writes only over that version, so two
// operators (or a resume and an abort) cannot interleave.
func (r *Rotator) load(ctx context.Context) (*State, error) {
	cm, err := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace).Get(ctx, StateConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.version = ""
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("anchor: read the rotation state: %w", err)
	}
	r.version = cm.ResourceVersion
	return unmarshalState(cm.Data[StateKey])
}

func (r *Rotator) save(ctx context.Context, st *State) error {
	data, err := st.marshal()
	if err != nil {
		return err
	}
	cms := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: StateConfigMap, Namespace: r.cfg.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "meshid"}},
		Data:       map[string]string{StateKey: data},
	}
	var saved *corev1.ConfigMap
	if r.version == "" {
		saved, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	} else {
		cm.ResourceVersion = r.version
		saved, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return errors.New("anchor: the rotation state changed under us: another meshid rotate-anchor is running (see status); stop it, then resume")
	}
	if err != nil {
		return fmt.Errorf("anchor: save the rotation state: %w", err)
	}
	r.version = saved.ResourceVersion
	return nil
}

// Keys in KeysSecret.
const (
	keyNewAnchor    = "new-anchor.key"
	keyOldIssuerCrt = "old-issuer.crt"
	keyOldIssuerKey = "old-issuer.key"
	keyOldAnchorCrt = "old-anchor.crt"
	keyOldAnchorKey = "old-anchor.key"
)

// names are the keys of KeysSecret that k holds, sorted.
func (k Saved) names() []string {
	var names []string
	for _, kv := range []struct {
		name string
		v    []byte
	}{
		{keyNewAnchor, k.NewAnchorKey},
		{keyOldAnchorCrt, k.OldAnchorCert}, {keyOldAnchorKey, k.OldAnchorKey},
		{keyOldIssuerCrt, k.OldIssuerCert}, {keyOldIssuerKey, k.OldIssuerKey},
	} {
		if kv.v != nil {
			names = append(names, kv.name)
		}
	}
	return names
}

func (r *Rotator) loadKeys(ctx context.Context) (Saved, error) {
	s, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, KeysSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Saved{}, nil
	}
	if err != nil {
		return Saved{}, fmt.Errorf("anchor: read the rotation's keys: %w", err)
	}
	return Saved{
		NewAnchorKey:  s.Data[keyNewAnchor],
		OldIssuerCert: s.Data[keyOldIssuerCrt], OldIssuerKey: s.Data[keyOldIssuerKey],
		OldAnchorCert: s.Data[keyOldAnchorCrt], OldAnchorKey: s.Data[keyOldAnchorKey],
	}, nil
}

func (r *Rotator) saveKeys(ctx context.Context, k Saved) error {
	data := map[string][]byte{}
	for name, v := range map[string][]byte{
		keyNewAnchor:    k.NewAnchorKey,
		keyOldIssuerCrt: k.OldIssuerCert, keyOldIssuerKey: k.OldIssuerKey,
		keyOldAnchorCrt: k.OldAnchorCert, keyOldAnchorKey: k.OldAnchorKey,
	} {
		if v != nil {
			data[name] = v
		}
	}
	return r.putSecret(ctx, KeysSecret, corev1.SecretTypeOpaque, data)
}

// deleteKeys removes the rotation's Secret (anchor and issuer keys).
func (r *Rotator) deleteKeys(ctx context.Context) error {
	if err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Delete(ctx, KeysSecret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("anchor: delete the rotation's keys (Secret %s): %w", KeysSecret, err)
	}
	return nil
}

// putSecret creates or replaces a Secret's data.
func (r *Rotator) putSecret(ctx context.Context, name string, typ corev1.SecretType, data map[string][]byte) error {
	secrets := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.cfg.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "meshid"}},
			Type:       typ, Data: data,
		}, metav1.CreateOptions{})
	} else if err == nil {
		cur.Data = data
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("anchor: write Secret %s: %w", name, err)
	}
	return nil
}

// bundlePEM reads the trust bundle ConfigMap.
func (r *Rotator) bundlePEM(ctx context.Context) ([]byte, error) {
	cm, err := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("anchor: read the trust bundle ConfigMap %s/%s: %w", r.cfg.Namespace, manifest.BundleConfigMap, err)
	}
	return bundleData(cm)
}

// bundleData is the bundle a trust bundle ConfigMap holds.
func bundleData(cm *corev1.ConfigMap) ([]byte, error) {
	pem, ok := cm.Data[bundle.Key]
	if !ok {
		return nil, errors.New("anchor: the trust bundle ConfigMap has no " + bundle.Key)
	}
	return []byte(pem), nil
}

// setBundle writes the bundle and the re-issue window (0 removes it).
func (r *Rotator) setBundle(ctx context.Context, pem []byte, window time.Duration) error {
	cms := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace)
	cm, err := cms.Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("anchor: read the trust bundle ConfigMap: %w", err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	w := windowValue(window)
	if cm.Data[bundle.Key] == string(pem) && cm.Data[bundle.ReissueWindowKey] == w {
		return nil
	}
	cm.Data[bundle.Key] = string(pem)
	if w == "" {
		delete(cm.Data, bundle.ReissueWindowKey)
	} else {
		cm.Data[bundle.ReissueWindowKey] = w
	}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("anchor: write the trust bundle ConfigMap: %w", err)
	}
	return nil
}

// check runs meshid check's trust checks on the bundle and the issuer in
// place; nil when they pass.
func (r *Rotator) check(ctx context.Context) error {
	pem, bundleErr := r.bundlePEM(ctx)
	var cert, key []byte
	s, issuerErr := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
	if issuerErr == nil {
		cert, key = s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	}
	if f := checkTrust(healthInput(r.clock.Now(), pem, bundleErr, cert, key, issuerErr)); f != nil {
		return f
	}
	return nil
}

// fleet reads every replica's report.
func (r *Rotator) fleet(ctx context.Context) (fleet.View, error) {
	cms, err := r.cfg.Client.CoreV1().ConfigMaps(r.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		return fleet.View{}, fmt.Errorf("anchor: read the fleet reports: %w", err)
	}
	now := r.clock.Now()
	return fleet.Merge(fleet.Read(cms.Items, now), now, fleet.StaleAfter), nil
}
