package ca

import (
	"context"
	"encoding/json"
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

// publishFleet writes this replica's report every FleetReportInterval.
func (s *Service) publishFleet(ctx context.Context) error {
	name := FleetConfigMapName(s.cfg.Replica)
	cms := s.cfg.Client.CoreV1().ConfigMaps(s.cfg.Namespace)
	tick := s.cfg.Clock.NewTicker(s.cfg.FleetReportInterval)
	defer tick.Stop()
	failing := false
	for {
		data, err := json.Marshal(s.fleetReport())
		if err == nil {
			err = upsertConfigMap(ctx, cms, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.cfg.Namespace, Labels: map[string]string{fleet.Label: "true"}},
				Data:       map[string]string{fleet.ConfigMapKey: string(data)},
			})
		}
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

func upsertConfigMap(ctx context.Context, cms configMaps, cm *corev1.ConfigMap) error {
	cur, err := cms.Get(ctx, cm.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur.Labels, cur.Data = cm.Labels, cm.Data
	if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update %s: %w", cm.Name, err)
	}
	return nil
}
