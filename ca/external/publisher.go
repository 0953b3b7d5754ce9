package external

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/api/workload/v1alpha1"
)

// resync is how often the published slices are compared with what they
// should be even when nothing changed (someone edited or deleted one).
const resync = 30 * time.Second

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Kube lists and watches Services and writes EndpointSlices. Required.
	Kube kubernetes.Interface
	// Dynamic lists and watches ExternalWorkloads. Required.
	Dynamic dynamic.Interface
	// Log receives the slices written and the failures; nil discards.
	Log *slog.Logger
	// Clock paces the resync; nil means the real clock.
	Clock clock.WithTicker
}

// Publisher keeps the EndpointSlices of Slices in the cluster: created,
// updated and deleted as ExternalWorkloads and Services change. Several
// replicas may run one: they write the same objects, and a conflict is
// settled at the next pass.
type Publisher struct {
	cfg  PublisherConfig
	kick chan struct{}
}

// NewPublisher returns a Publisher, or an error if cfg is incomplete.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Kube == nil || cfg.Dynamic == nil {
		return nil, errors.New("external: PublisherConfig needs Kube and Dynamic")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Publisher{cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

func (p *Publisher) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends, then returns nil.
func (p *Publisher) Run(ctx context.Context) error {
	svcs := informers.NewSharedInformerFactory(p.cfg.Kube, 0).Core().V1().Services().Informer()
	ews := dynamicinformer.NewDynamicSharedInformerFactory(p.cfg.Dynamic, 0).ForResource(v1alpha1.Resource).Informer()
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { p.changed() }, UpdateFunc: func(any, any) { p.changed() }, DeleteFunc: func(any) { p.changed() }}
	for _, inf := range []cache.SharedIndexInformer{svcs, ews} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("external: %w", err)
		}
		go inf.Run(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), svcs.HasSynced, ews.HasSynced) {
		return nil
	}
	tick := p.cfg.Clock.NewTicker(resync)
	defer tick.Stop()
	for {
		if err := p.reconcile(ctx, svcs.GetStore().List(), ews.GetStore().List()); err != nil && ctx.Err() == nil {
			p.cfg.Log.Warn("cannot publish the EndpointSlices of ExternalWorkloads; retrying", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
		case <-tick.C():
		}
	}
}

// reconcile writes what Slices says and deletes the managed slices it
// does not name.
func (p *Publisher) reconcile(ctx context.Context, svcObjs, ewObjs []any) error {
	var svcs []corev1.Service
	for _, o := range svcObjs {
		svcs = append(svcs, *o.(*corev1.Service))
	}
	var ws []v1alpha1.ExternalWorkload
	for _, o := range ewObjs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		w, err := FromUnstructured(u)
		if err != nil {
			p.cfg.Log.Warn("an ExternalWorkload does not decode; not published", "error", err.Error())
			continue
		}
		ws = append(ws, *w)
	}
	api := p.cfg.Kube.DiscoveryV1()
	have, err := api.EndpointSlices("").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return fmt.Errorf("external: list EndpointSlices: %w", err)
	}
	existing := map[string]*discoveryv1.EndpointSlice{}
	for i := range have.Items {
		s := &have.Items[i]
		existing[s.Namespace+"/"+s.Name] = s
	}
	var errs []error
	for _, want := range Slices(svcs, ws) {
		key := want.Namespace + "/" + want.Name
		cur, ok := existing[key]
		delete(existing, key)
		switch {
		case !ok:
			_, err = api.EndpointSlices(want.Namespace).Create(ctx, &want, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // another replica's; compared at the next pass
			}
		case cur.AddressType != want.AddressType:
			err = api.EndpointSlices(want.Namespace).Delete(ctx, want.Name, metav1.DeleteOptions{})
		case !reflect.DeepEqual(cur.Labels, want.Labels) || !reflect.DeepEqual(cur.Endpoints, want.Endpoints) || !reflect.DeepEqual(cur.Ports, want.Ports) || !reflect.DeepEqual(cur.OwnerReferences, want.OwnerReferences):
			cur.Labels, cur.Endpoints, cur.Ports, cur.OwnerReferences = want.Labels, want.Endpoints, want.Ports, want.OwnerReferences
			_, err = api.EndpointSlices(want.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
		default:
			continue
		}
		if err != nil && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("EndpointSlice %s: %w", key, err))
		} else if err == nil {
			p.cfg.Log.Info("EndpointSlice of an ExternalWorkload published", "endpointslice", key, "external_workload", want.Namespace+"/"+want.Labels[WorkloadLabel])
		}
	}
	for key, s := range existing {
		if err := api.EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("EndpointSlice %s: %w", key, err))
		} else {
			p.cfg.Log.Info("EndpointSlice of an ExternalWorkload removed", "endpointslice", key)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("external: %w", errors.Join(errs...))
	}
	return nil
}
