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
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
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

func (r *Rotator) loadKeys(ctx context.Context) (map[string][]byte, error) {
	s, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, KeysSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("anchor: read the rotation's keys: %w", err)
	}
	return s.Data, nil
}

func (r *Rotator) saveKeys(ctx context.Context, keys map[string][]byte) error {
	return r.putSecret(ctx, KeysSecret, corev1.SecretTypeOpaque, keys)
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
	w := window.String()
	if w == "0s" {
		w = ""
	}
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

// issuer reads and parses the issuer Secret.
func (r *Rotator) issuer(ctx context.Context) (*issuer.KeyPair, error) {
	s, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return issuer.Parse(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
}
