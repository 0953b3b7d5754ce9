package source

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// reachLogEvery bounds how often a list or watch that keeps failing is
// logged: the reflector retries every few seconds.
const reachLogEvery = 30 * time.Second

// reachLW wraps the reflector's ListerWatcher so that a list or watch the
// API server does not answer is said at WARN, naming the object, at most
// once per reachLogEvery (client-go only logs it at debug). Until the
// first list succeeds, failures also go to unreachable, so /ready says why
// no material is loaded.
type reachLW struct {
	lw          cache.ListerWatcherWithContext
	log         *slog.Logger
	from        string
	unreachable func(error)
	now         func() time.Time

	mu       sync.Mutex
	listed   bool
	failures int
	logged   time.Time
}

func (r *reachLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	obj, err := r.lw.ListWithContext(ctx, opts)
	r.result("list", err)
	return obj, err
}

func (r *reachLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (apiwatch.Interface, error) {
	w, err := r.lw.WatchWithContext(ctx, opts)
	r.result("watch", err)
	return w, err
}

// List and Watch complete cache.ListerWatcher; the reflector calls the
// context forms.
func (r *reachLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return r.ListWithContext(context.Background(), opts)
}

func (r *reachLW) Watch(opts metav1.ListOptions) (apiwatch.Interface, error) {
	return r.WatchWithContext(context.Background(), opts)
}

// result counts a failure and logs it when due; a success after failures
// is logged once.
func (r *reachLW) result(verb string, err error) {
	r.mu.Lock()
	if err == nil {
		failures := r.failures
		r.failures, r.logged = 0, time.Time{}
		if verb == "list" {
			r.listed = true
		}
		r.mu.Unlock()
		if failures > 0 {
			r.log.Info("the API server answers again for "+r.from, "source", r.from, "failures", failures)
		}
		return
	}
	r.failures++
	now := r.now()
	due := r.logged.IsZero() || now.Sub(r.logged) >= reachLogEvery
	if due {
		r.logged = now
	}
	failures, listed := r.failures, r.listed
	r.mu.Unlock()
	if !due {
		return
	}
	r.log.Warn(fmt.Sprintf("cannot %s %s: is the API server reachable (--kubeconfig, network, RBAC)? retrying; the last good material, if any, stays in force", verb, r.from),
		"source", r.from, "error", err.Error(), "failures", failures)
	if !listed && r.unreachable != nil {
		r.unreachable(fmt.Errorf("source: cannot %s %s: the API server does not answer (%v); retrying", verb, r.from, err))
	}
}
