package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/issuer"
)

// fleetReport is what this replica publishes: the trust material in force,
// the updates it did not take, and the proxies it serves.
func (s *Service) fleetReport() fleet.Report {
	r := trustReport(s.store.Load())
	r.Replica, r.Updated, r.Proxies = s.cfg.Replica, s.cfg.Clock.Now(), s.server.Fleet().Live()
	r.Updates = s.updates.list(s.store)
	r.JWT = s.jwtReport()
	if s.renewer != nil {
		st := s.renewer.Status()
		u := fleet.Upstream{Upstream: st.Upstream, KeyLocation: st.KeyLocation, Reachable: st.Reachable,
			LastRenewal: st.LastRenewal, NextRenewal: st.NextRenewal, NotAfter: st.NotAfter, Failures: st.Failures, LastError: st.LastError}.Bounded()
		r.Upstream = &u
	}
	return r
}

// trustReport describes st: the issuer and the bundle in force.
func trustReport(st *trust.State) fleet.Report {
	var r fleet.Report
	if sg := st.Issuer; sg != nil {
		cert := sg.Certificate()
		r.IssuerSHA256 = issuer.Fingerprint(sg)
		r.Issuer = &fleet.Issuer{Subject: fleet.Truncate(cert.Subject.String()), NotBefore: cert.NotBefore, NotAfter: issuer.NotAfter(sg), ChainNotAfter: st.ChainExpiry()}
		if a := st.ChainAnchor(); a != nil {
			r.Issuer.AnchorSHA256 = bundle.Fingerprint(a)
		}
	}
	if b := st.Bundle; b != nil {
		r.BundleSHA256 = b.SHA256()
		anchors := b.Anchors()
		r.AnchorsTotal = len(anchors)
		for _, a := range anchors[:min(len(anchors), fleet.MaxAnchors)] {
			r.Anchors = append(r.Anchors, fleet.Anchor{SHA256: bundle.Fingerprint(a), NotAfter: a.NotAfter})
		}
	}
	return r
}

// FleetConfigMapName is the ConfigMap a replica publishes to.
func FleetConfigMapName(replica string) string {
	name := strings.ToLower(replica)
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, name)
	if len(fleet.ConfigMapPrefix)+len(name) > 253 {
		name = name[:253-len(fleet.ConfigMapPrefix)]
	}
	return fleet.ConfigMapPrefix + name
}

// publishFleet writes this replica's report every FleetReportInterval:
// the shards that changed, as fleet.Writer allows, then the manifest.
func (s *Service) publishFleet(ctx context.Context) error {
	name := FleetConfigMapName(s.cfg.Replica)
	w, err := fleet.NewWriter(fleet.WriterConfig{Name: name, Clock: s.cfg.Clock, BytesPerMinute: s.cfg.FleetReportBytesPerMinute})
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	cms := &cachedConfigMaps{api: s.cfg.Client.CoreV1().ConfigMaps(s.cfg.Namespace), namespace: s.cfg.Namespace, last: map[string]*corev1.ConfigMap{}}
	tick := s.cfg.Clock.NewTicker(s.cfg.FleetReportInterval)
	defer tick.Stop()
	failing := false
	for {
		var err error
		for _, o := range w.Next(s.fleetReport()) {
			if err = cms.put(ctx, o.Name, fleet.ShardKey, o.Data); err != nil {
				break // the manifest still names what is written
			}
			w.Written(o)
		}
		data, merr := w.Manifest()
		if merr == nil {
			merr = cms.put(ctx, name, fleet.ConfigMapKey, data)
		}
		err = errors.Join(err, merr)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.cfg.Log.Warn("cannot publish the fleet report; anchor rotation cannot see this replica's proxies", "configmap", name, "error", err)
			failing = true
		case err == nil && failing:
			s.cfg.Log.Info("fleet report published again", "configmap", name)
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

type configMaps interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.ConfigMap, error)
	Create(ctx context.Context, cm *corev1.ConfigMap, opts metav1.CreateOptions) (*corev1.ConfigMap, error)
	Update(ctx context.Context, cm *corev1.ConfigMap, opts metav1.UpdateOptions) (*corev1.ConfigMap, error)
}

// cachedConfigMaps writes the fleet ConfigMaps over what it last wrote of
// each (an update on its resourceVersion, no read first), and reads one
// only when that update fails.
type cachedConfigMaps struct {
	api       configMaps
	namespace string
	last      map[string]*corev1.ConfigMap
}

// put sets data[key] of ConfigMap name (labelled fleet.Label) to data.
func (c *cachedConfigMaps) put(ctx context.Context, name, key string, data []byte) error {
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.namespace, Labels: map[string]string{fleet.Label: "true"}},
		Data:       map[string]string{key: string(data)},
	}
	if cur := c.last[name]; cur != nil {
		cur.Labels, cur.Data = want.Labels, want.Data
		if got, err := c.api.Update(ctx, cur, metav1.UpdateOptions{}); err == nil {
			c.last[name] = got
			return nil
		}
		delete(c.last, name) // changed or deleted meanwhile: read it again
	}
	got, err := upsertConfigMap(ctx, c.api, want)
	if err == nil {
		c.last[name] = got
	}
	return err
}

func upsertConfigMap(ctx context.Context, cms configMaps, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	cur, err := cms.Get(ctx, cm.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return cms.Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, err
	}
	cur.Labels, cur.Data = cm.Labels, cm.Data
	got, err := cms.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", cm.Name, err)
	}
	return got, nil
}
