package source

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
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

func watch(ctx context.Context, o Object, lw cache.ListerWatcher, example runtime.Object, data func(runtime.Object) map[string][]byte, sink Sink) error {
	if o.Client == nil || o.Namespace == "" || o.Name == "" {
		return fmt.Errorf("source: watching %s needs a client, a namespace and a name", o.Material)
	}
	log := o.log().With("material", string(o.Material))
	from := fmt.Sprintf("%T %s/%s", example, o.Namespace, o.Name)
	inf := cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{})
	apply := func(obj any) {
		ro, ok := obj.(runtime.Object)
		if !ok {
			return
		}
		report(log, o.Recorder, ro, o.Material, from, data(ro), sink)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: apply,
		UpdateFunc: func(oldObj, newObj any) {
			if oldObj.(metav1.Object).GetResourceVersion() != newObj.(metav1.Object).GetResourceVersion() {
				apply(newObj)
			}
		},
		DeleteFunc: func(any) {
			log.Warn(from+" was deleted; keeping the last good "+string(o.Material)+" in force until it is recreated", "source", from)
		},
	})
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		log.Warn("watch of "+from+" failed; retrying", "error", err)
	})
	go func() {
		// Say so once if the object does not exist yet.
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) && len(inf.GetStore().List()) == 0 {
			log.Warn(from+" does not exist yet; waiting for it", "source", from)
		}
	}()
	inf.RunWithContext(ctx)
	return nil
}
