// Package distribute owns putting the trust bundle where injected pods can
// mount it: a copy of the control plane's bundle ConfigMap in every
// namespace labelled meshid.dev/inject=enabled (and in any namespace a
// pod was injected into), kept equal to the source. Proxies also follow the
// CA's bundle stream, so a copy only has to be good enough to start with;
// the copies still follow every change within an interval.
//
// Every request names the ConfigMap, so the webhook's RBAC can be limited
// to that name: copies are listed with a fieldSelector and created by
// server-side apply (a plain create carries no name RBAC could check).
//
// It imports only the shared noun bundle.
package distribute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
)

// FieldManager owns the copies' fields.
const FieldManager = "meshid-webhook"

// Config configures a Distributor.
type Config struct {
	// Client reads the source and writes the copies. Required.
	Client kubernetes.Interface
	// Namespace and Name of the source ConfigMap; copies have the same Name.
	Namespace, Name string
	// NamespaceLabel selects the namespaces to copy to ("key=value").
	NamespaceLabel string
	// Interval between reconciliations; 0 means 10 s.
	Interval time.Duration
	// Log receives a line per change; nil discards.
	Log *slog.Logger
	// Clock paces the reconciliations; nil means the real clock.
	Clock clock.WithTicker
}

// Distributor keeps the copies.
type Distributor struct{ cfg Config }

// New returns a Distributor.
func New(cfg Config) (*Distributor, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Name == "" {
		return nil, errors.New("distribute: Config needs Client, Namespace and Name")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Distributor{cfg: cfg}, nil
}

// Run reconciles every Interval until ctx ends.
func (d *Distributor) Run(ctx context.Context) error {
	tick := d.cfg.Clock.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for {
		if err := d.Reconcile(ctx); err != nil && ctx.Err() == nil {
			d.cfg.Log.Warn("cannot distribute the trust bundle", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

// Reconcile brings every copy in line with the source once.
func (d *Distributor) Reconcile(ctx context.Context) error {
	src, err := d.source(ctx)
	if err != nil {
		return err
	}
	targets := map[string]bool{}
	if d.cfg.NamespaceLabel != "" {
		nss, err := d.cfg.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: d.cfg.NamespaceLabel})
		if err != nil {
			return fmt.Errorf("distribute: list namespaces: %w", err)
		}
		for _, ns := range nss.Items {
			targets[ns.Name] = true
		}
	}
	copies, err := d.cfg.Client.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{
		LabelSelector: bundle.CopyLabel + "=copy", FieldSelector: fields.OneTermEqualSelector("metadata.name", d.cfg.Name).String(),
	})
	if err != nil {
		return fmt.Errorf("distribute: list copies: %w", err)
	}
	for _, cm := range copies.Items {
		targets[cm.Namespace] = true
	}
	delete(targets, d.cfg.Namespace)
	var errs []error
	for ns := range targets {
		if err := d.put(ctx, ns, src.Data); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ensure puts a copy in namespace ns now, for a pod about to mount it.
func (d *Distributor) Ensure(ctx context.Context, ns string) error {
	if ns == d.cfg.Namespace {
		return nil
	}
	src, err := d.source(ctx)
	if err != nil {
		return err
	}
	return d.put(ctx, ns, src.Data)
}

func (d *Distributor) source(ctx context.Context) (*corev1.ConfigMap, error) {
	src, err := d.cfg.Client.CoreV1().ConfigMaps(d.cfg.Namespace).Get(ctx, d.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("distribute: read the trust bundle %s/%s: %w", d.cfg.Namespace, d.cfg.Name, err)
	}
	return src, nil
}

func (d *Distributor) put(ctx context.Context, ns string, data map[string]string) error {
	cms := d.cfg.Client.CoreV1().ConfigMaps(ns)
	// Only the bundle travels (not the CA's re-issue window).
	want := map[string]string{bundle.Key: data[bundle.Key]}
	cur, err := cms.Get(ctx, d.cfg.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Applied, not created: the request names the object. Not forced,
		// so a ConfigMap someone made meanwhile is not taken over.
		_, err = cms.Apply(ctx, corev1ac.ConfigMap(d.cfg.Name, ns).WithLabels(map[string]string{bundle.CopyLabel: "copy"}).WithData(want),
			metav1.ApplyOptions{FieldManager: FieldManager})
		if err == nil {
			d.cfg.Log.Info("trust bundle copied", "namespace", ns)
		}
	case err != nil:
	case cur.Labels[bundle.CopyLabel] != "copy":
		return fmt.Errorf("distribute: %s/%s exists and is not a meshid copy; leaving it alone", ns, d.cfg.Name)
	case !maps.Equal(cur.Data, want):
		cur.Data = want
		_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
		if err == nil {
			d.cfg.Log.Info("trust bundle copy updated", "namespace", ns)
		}
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("distribute: %s/%s: %w", ns, d.cfg.Name, err)
	}
	return nil
}
