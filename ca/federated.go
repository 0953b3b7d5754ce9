package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/api/federation/v1alpha1"
	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/foreign"
)

// FederatedConfig configures Federated.
type FederatedConfig struct {
	// Dynamic lists and watches FederatedTrustDomains and writes their
	// status. Required.
	Dynamic dynamic.Interface
	// TrustDomain is ours: a FederatedTrustDomain naming it is ignored.
	// Required.
	TrustDomain spiffeid.TrustDomain
	// Local is our bundle in force (a foreign bundle holding one of its
	// anchors is refused); nil means none is checked.
	Local func() *bundle.Bundle
	// Limits bound each fetch; Pace says when the next one is.
	Limits foreign.Limits
	Pace   foreign.Pace
	// Registry, when set, gets the fetch counters.
	Registry prometheus.Registerer
	// Log receives the refusals; nil discards.
	Log *slog.Logger
	// Clock paces the fetches; nil means the real clock.
	Clock clock.Clock
}

// Federated keeps the foreign bundles in force, from the
// FederatedTrustDomains' status (what a replica fetched last) or, before
// any fetch, their initial bundle; and it fetches each one again when due,
// storing what it got in the object's status, so that every replica and a
// restarted CA serve the same bundles.
type Federated struct {
	cfg      FederatedConfig
	informer cache.SharedIndexInformer

	refreshed *prometheus.CounterVec
	refused   *prometheus.CounterVec

	mu      sync.Mutex
	bundles []*identityv1.FederatedBundle // in force, sorted by trust domain
	changed chan struct{}
	workers map[string]context.CancelFunc // by object name
	runCtx  context.Context
}

// NewFederated returns a Federated; Run fills it.
func NewFederated(cfg FederatedConfig) (*Federated, error) {
	if cfg.Dynamic == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: federation needs a dynamic client and our trust domain")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Local == nil {
		cfg.Local = func() *bundle.Bundle { return nil }
	}
	f := &Federated{
		cfg:      cfg,
		informer: dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0).ForResource(v1alpha1.Resource).Informer(),
		refreshed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_foreign_bundle_refreshed_total",
			Help: "Good fetches of a foreign trust domain's bundle, by trust domain.",
		}, []string{"trust_domain"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_foreign_bundle_refused_total",
			Help: "Refused fetches of a foreign trust domain's bundle (the last good one stays in force), by trust domain and reason.",
		}, []string{"trust_domain", "reason"}),
		changed: make(chan struct{}),
		workers: map[string]context.CancelFunc{},
	}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(f.refreshed); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if err := cfg.Registry.Register(f.refused); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	_, _ = f.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.sync() },
		UpdateFunc: func(any, any) { f.sync() },
		DeleteFunc: func(any) { f.sync() },
	})
	return f, nil
}

// Bundles returns the foreign bundles in force, sorted by trust domain;
// the caller must not change them.
func (f *Federated) Bundles() []*identityv1.FederatedBundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bundles
}

// Changed returns a channel closed at the next change of Bundles.
func (f *Federated) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Run watches the FederatedTrustDomains and fetches their bundles until
// ctx ends.
func (f *Federated) Run(ctx context.Context) error {
	f.mu.Lock()
	f.runCtx = ctx
	f.mu.Unlock()
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), f.informer.HasSynced) {
			f.sync()
		}
	}()
	f.informer.RunWithContext(ctx)
	return nil
}

// objects decodes every FederatedTrustDomain the informer holds, by name.
func (f *Federated) objects() map[string]*v1alpha1.FederatedTrustDomain {
	out := map[string]*v1alpha1.FederatedTrustDomain{}
	for _, obj := range f.informer.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var ftd v1alpha1.FederatedTrustDomain
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ftd); err != nil {
			f.cfg.Log.Warn("skipping a FederatedTrustDomain that does not decode", "name", u.GetName(), "error", err)
			continue
		}
		out[ftd.Name] = &ftd
	}
	return out
}

// sync rebuilds the bundles in force from the objects and starts or stops
// one fetch loop per object.
func (f *Federated) sync() {
	objs := f.objects()
	var bundles []*identityv1.FederatedBundle
	seen := map[spiffeid.TrustDomain]string{}
	for _, name := range sortedKeys(objs) {
		ftd := objs[name]
		td, anchors, _, err := ftd.Anchors()
		switch {
		case err != nil:
			f.cfg.Log.Warn("a FederatedTrustDomain has no bundle to trust", "name", name, "error", err)
			continue
		case td == f.cfg.TrustDomain:
			f.cfg.Log.Warn("ignoring a FederatedTrustDomain naming our own trust domain", "name", name, "trust_domain", td.Name())
			continue
		case seen[td] != "":
			f.cfg.Log.Warn("ignoring a second FederatedTrustDomain for a trust domain", "name", name, "trust_domain", td.Name(), "first", seen[td])
			continue
		}
		seen[td] = name
		b, err := bundle.New(anchors...)
		if err != nil {
			f.cfg.Log.Warn("a FederatedTrustDomain's bundle is not valid", "name", name, "error", err)
			continue
		}
		bundles = append(bundles, &identityv1.FederatedBundle{TrustDomain: td.Name(), Pem: b.PEM(), Sha256: b.SHA256()})
	}
	slices.SortFunc(bundles, func(a, b *identityv1.FederatedBundle) int {
		return strings.Compare(a.GetTrustDomain(), b.GetTrustDomain())
	})

	f.mu.Lock()
	defer f.mu.Unlock()
	if !sameBundles(bundles, f.bundles) {
		f.bundles = bundles
		close(f.changed)
		f.changed = make(chan struct{})
	}
	if f.runCtx == nil {
		return
	}
	for name, cancel := range f.workers {
		if objs[name] == nil {
			cancel()
			delete(f.workers, name)
		}
	}
	for name := range objs {
		if f.workers[name] == nil {
			ctx, cancel := context.WithCancel(f.runCtx)
			f.workers[name] = cancel
			go f.work(ctx, name)
		}
	}
}

// work fetches the bundle of the object name whenever it is due, until ctx
// ends or the object is gone.
func (f *Federated) work(ctx context.Context, name string) {
	failures := 0
	for {
		ftd := f.objects()[name]
		if ftd == nil {
			return
		}
		wait := f.refresh(ctx, ftd, &failures)
		select {
		case <-ctx.Done():
			return
		case <-f.cfg.Clock.After(wait):
		}
	}
}

// refresh fetches ftd's bundle once, stores the outcome in its status and
// returns the wait before the next fetch.
func (f *Federated) refresh(ctx context.Context, ftd *v1alpha1.FederatedTrustDomain, failures *int) time.Duration {
	log := f.cfg.Log.With("name", ftd.Name, "trust_domain", ftd.Spec.TrustDomain)
	td, anchors, _, err := ftd.Anchors()
	hint := time.Duration(0)
	if err == nil && ftd.Status.Bundle != "" {
		if b, perr := spiffebundle.Parse(td, []byte(ftd.Status.Bundle)); perr == nil {
			hint, _ = b.RefreshHint()
		}
	}
	var fetched *spiffebundle.Bundle
	if err == nil && td == f.cfg.TrustDomain {
		err = errors.New("spec.trustDomain is our own trust domain")
	}
	if err == nil {
		e := foreign.Endpoint{TrustDomain: td, URL: ftd.Spec.BundleEndpointURL, Profile: ftd.Spec.Profile,
			Trusted: spiffebundle.FromX509Authorities(td, anchors)}
		if ftd.Spec.Profile == foreign.SPIFFE {
			if e.ID, err = spiffeid.FromString(ftd.Spec.EndpointSPIFFEID); err != nil {
				err = fmt.Errorf("spec.endpointSPIFFEID: %w", err)
			}
		}
		if err == nil {
			if fetched, err = foreign.Fetch(ctx, e, f.cfg.Limits); err == nil {
				err = foreign.Check(fetched, td, f.cfg.Local(), f.cfg.Clock.Now())
			}
		}
	}
	if ctx.Err() != nil {
		return 0
	}
	now := metav1.NewTime(f.cfg.Clock.Now())
	st := ftd.Status
	if err != nil {
		*failures++
		reason := foreign.ReasonOf(err)
		f.refused.WithLabelValues(ftd.Spec.TrustDomain, string(reason)).Inc()
		log.Warn("refused a foreign bundle; the last good one stays in force", "reason", string(reason), "failures", *failures, "error", err)
		st.Failures++
		st.LastFailure, st.LastError = &now, err.Error()
	} else {
		*failures = 0
		f.refreshed.WithLabelValues(ftd.Spec.TrustDomain).Inc()
		doc, merr := fetched.Marshal()
		if merr != nil {
			log.Error("cannot encode a fetched bundle", "error", merr)
			return f.cfg.Pace.Next(hint, 1)
		}
		hint, _ = fetched.RefreshHint()
		st = v1alpha1.FederatedTrustDomainStatus{Bundle: string(doc), LastRefresh: &now}
		if seq, ok := fetched.SequenceNumber(); ok {
			st.Sequence = &seq
		}
		if st.Bundle != ftd.Status.Bundle {
			log.Info("took a new foreign bundle", "anchors", len(fetched.X509Authorities()), "refresh_hint", hint.String())
		}
	}
	if err := f.storeStatus(ctx, ftd, st); err != nil {
		log.Warn("cannot store a FederatedTrustDomain's status; the next fetch will try again", "error", err)
	}
	return f.cfg.Pace.Next(hint, *failures)
}

// storeStatus writes st over ftd's status, at the resourceVersion the
// informer has: a replica that stored first wins, and this one will see
// its bundle.
func (f *Federated) storeStatus(ctx context.Context, ftd *v1alpha1.FederatedTrustDomain, st v1alpha1.FederatedTrustDomainStatus) error {
	next := ftd.DeepCopy()
	next.Status = st
	next.APIVersion, next.Kind = v1alpha1.SchemeGroupVersion.String(), "FederatedTrustDomain"
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(next)
	if err != nil {
		return err
	}
	_, err = f.cfg.Dynamic.Resource(v1alpha1.Resource).UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
	return err
}

func sameBundles(a, b []*identityv1.FederatedBundle) bool {
	return slices.EqualFunc(a, b, func(x, y *identityv1.FederatedBundle) bool {
		return x.GetTrustDomain() == y.GetTrustDomain() && x.GetSha256() == y.GetSha256()
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
