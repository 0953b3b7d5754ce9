// Package policies owns the CA's side of AuthorizationPolicy: it watches
// every AuthorizationPolicy in the cluster and compiles, for one pod, the
// policy file its proxy enforces (the policies of the pod's namespace whose
// selector matches the pod's labels, one entry per port).
//
// The policy model itself (conversion, merge, the file format) is package
// policy's; this package only selects. It imports api/policy and policy;
// it must not import proxy/ or webhooks/.
package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/policy"
)

// Watcher keeps every AuthorizationPolicy of the cluster.
type Watcher struct {
	client dynamic.Interface
	log    *slog.Logger

	informer cache.SharedIndexInformer
	mu       sync.Mutex
	changed  chan struct{}
}

// NewWatcher returns a Watcher; Run fills it.
func NewWatcher(client dynamic.Interface, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	w := &Watcher{client: client, log: log, informer: f.ForResource(v1alpha1.Resource).Informer(), changed: make(chan struct{})}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.bump() },
		UpdateFunc: func(any, any) { w.bump() },
		DeleteFunc: func(any) { w.bump() },
	})
	return w
}

func (w *Watcher) bump() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of any policy.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	go func() {
		// Streams waiting for the first list learn that it is done here,
		// even when it found no policy (and so no event).
		if cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
			w.bump()
		}
	}()
	w.informer.RunWithContext(ctx)
	return nil
}

// Synced reports whether the first list is done.
func (w *Watcher) Synced() bool { return w.informer.HasSynced() }

// For compiles the policy file of pod, with defaultMode for ports no
// policy names, and returns it with its SHA-256: the AuthorizationPolicies
// of the pod's namespace whose selector matches its labels, merged by
// policy.Merge.
func (w *Watcher) For(pod *corev1.Pod, defaultMode policy.Mode) ([]byte, string, error) {
	var aps []v1alpha1.AuthorizationPolicy
	for _, obj := range w.informer.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok || u.GetNamespace() != pod.Namespace {
			continue
		}
		var ap v1alpha1.AuthorizationPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ap); err != nil {
			w.log.Warn("skipping an AuthorizationPolicy that does not decode", "namespace", u.GetNamespace(), "name", u.GetName(), "error", err)
			continue
		}
		aps = append(aps, ap)
	}
	data, err := FileFor(pod, aps, defaultMode).Marshal()
	if err != nil {
		return nil, "", fmt.Errorf("policies: %w", err)
	}
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:]), nil
}

// FileFor is the policy file of pod among aps, with defaultMode for ports
// none names: the policies of the pod's namespace whose selector matches
// its labels, merged by policy.Merge. It is what For sends the pod's
// proxy, and what `meshid dashboard` computes its policy matrix with.
func FileFor(pod *corev1.Pod, aps []v1alpha1.AuthorizationPolicy, defaultMode policy.Mode) policy.File {
	var ports []policy.PortFile
	for _, ap := range aps {
		if ap.Namespace == pod.Namespace && selects(ap.Spec.Selector, pod.Labels) {
			ports = append(ports, policy.FromSpec(ap.Namespace+"/"+ap.Name, ap.Spec))
		}
	}
	return policy.Merge(defaultMode, ports)
}

func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(podLabels))
}
