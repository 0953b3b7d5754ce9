package source

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
)

// Object names one watched Secret or ConfigMap.
type Object struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// Namespace and Name of the object. Required.
	Namespace, Name string
	// Material says what the object carries. Required.
	Material Material
	// Recorder receives Events on the object; nil records none.
	Recorder record.EventRecorder
	// Log receives a line per update; nil discards.
	Log *slog.Logger
	// Gone, when set, is told why whenever the object is deleted, is
	// missing when the watch starts, or cannot be listed yet because the
	// API server does not answer; the last good material stays in force.
	// The next update goes to the Sink as usual.
	Gone func(error)
	// Clock paces the WARN lines of an API server that does not answer;
	// nil means the real clock.
	Clock clock.PassiveClock
}

func (o Object) clock() clock.PassiveClock {
	if o.Clock == nil {
		return clock.RealClock{}
	}
	return o.Clock
}

func (o Object) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// WatchSecret feeds sink with the data of the Secret o names, now and at
// every change, until ctx ends. A deleted Secret leaves the last good
// material in force. It returns nil when ctx ends.
func WatchSecret(ctx context.Context, o Object, sink Sink) error {
	lw := cache.NewListWatchFromClient(o.Client.CoreV1().RESTClient(), "secrets", o.Namespace, fields.OneTermEqualSelector("metadata.name", o.Name))
	return watch(ctx, o, lw, &corev1.Secret{}, func(obj runtime.Object) map[string][]byte {
		return obj.(*corev1.Secret).Data
	}, sink)
}

// WatchConfigMap is WatchSecret for a ConfigMap; data and binaryData are
// merged.
func WatchConfigMap(ctx context.Context, o Object, sink Sink) error {
	lw := cache.NewListWatchFromClient(o.Client.CoreV1().RESTClient(), "configmaps", o.Namespace, fields.OneTermEqualSelector("metadata.name", o.Name))
	return watch(ctx, o, lw, &corev1.ConfigMap{}, func(obj runtime.Object) map[string][]byte {
		cm := obj.(*corev1.ConfigMap)
		data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
		for k, v := range cm.BinaryData {
			data[k] = v
		}
		for k, v := range cm.Data {
			data[k] = []byte(v)
		}
		return data
	}, sink)
}

// Retry pacing of the watch: a single object is cheap to list, so after an
// API server outage the CA sees changes again within seconds, rather than
// the minute of client-go's default backoff.
var watchBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: 5 * time.Second}

func watch(ctx context.Context, o Object, lw cache.ListerWatcher, example runtime.Object, data func(runtime.Object) map[string][]byte, sink Sink) error {
	if o.Client == nil || o.Namespace == "" || o.Name == "" {
		return fmt.Errorf("source: watching %s needs a client, a namespace and a name", o.Material)
	}
	log := o.log().With("material", string(o.Material))
	from := fmt.Sprintf("%T %s/%s", example, o.Namespace, o.Name)
	st := &objectStore{
		apply: func(obj runtime.Object) { report(log, o.Recorder, obj, o.Material, from, data(obj), sink) },
		gone: func() {
			log.Warn(from+" was deleted; keeping the last good "+string(o.Material)+" in force until it is recreated", "source", from)
			if o.Gone != nil {
				o.Gone(fmt.Errorf("source: %s was deleted; the last good %s stays in force until it is recreated", from, o.Material))
			}
		},
		missing: func() {
			log.Warn(from+" does not exist yet; waiting for it", "source", from)
			if o.Gone != nil {
				o.Gone(fmt.Errorf("source: %s does not exist", from))
			}
		},
	}
	reach := &reachLW{lw: cache.ToListerWatcherWithContext(lw), log: log, from: from, unreachable: o.Gone, now: o.clock().Now}
	r := cache.NewReflectorWithOptions(reach, example, st, cache.ReflectorOptions{
		Name: from, TypeDescription: fmt.Sprintf("%T", example), Backoff: &watchBackoff,
	})
	// client-go logs list and watch errors only at debug; reach says them
	// at WARN.
	r.RunWithContext(ctx)
	return nil
}

// objectStore is the reflector's store for one named object: it passes
// every new version on, once.
type objectStore struct {
	apply   func(runtime.Object)
	gone    func()
	missing func()

	mu      sync.Mutex
	version string // resourceVersion last applied; "" when absent
	listed  bool
}

func (s *objectStore) see(obj any) {
	ro, ok := obj.(runtime.Object)
	if !ok {
		return
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	s.mu.Lock()
	same := m.GetResourceVersion() == s.version
	s.version = m.GetResourceVersion()
	s.mu.Unlock()
	if !same {
		s.apply(ro)
	}
}

func (s *objectStore) Add(obj any) error    { s.see(obj); return nil }
func (s *objectStore) Update(obj any) error { s.see(obj); return nil }
func (s *objectStore) Delete(any) error {
	s.mu.Lock()
	s.version = ""
	s.mu.Unlock()
	s.gone()
	return nil
}

// Replace is a (re)list: the object, or nothing.
func (s *objectStore) Replace(list []any, _ string) error {
	s.mu.Lock()
	first := !s.listed
	s.listed = true
	had := s.version != ""
	s.mu.Unlock()
	if len(list) == 0 {
		switch {
		case first:
			s.missing()
		case had:
			_ = s.Delete(nil)
		}
		return nil
	}
	for _, obj := range list {
		s.see(obj)
	}
	return nil
}

func (s *objectStore) Resync() error { return nil }
