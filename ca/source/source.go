package source

import (
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
)

// Sink applies the data of one update. It reports whether anything changed,
// or returns why it refused the update (and then changes nothing).
type Sink func(data map[string][]byte) (changed bool, err error)

// Material names what a source carries, for logs and Event reasons:
// "issuer" or "bundle".
type Material string

const (
	Issuer Material = "issuer"
	Bundle Material = "bundle"
)

// reasons for Events, per material.
func (m Material) loaded() string {
	if m == Issuer {
		return "IssuerLoaded"
	}
	return "BundleLoaded"
}

func (m Material) refused() string {
	if m == Issuer {
		return "IssuerRefused"
	}
	return "BundleRefused"
}

// report applies data to sink and tells the log (and the Event recorder,
// when obj and rec are set) what happened.
func report(log *slog.Logger, rec record.EventRecorder, obj runtime.Object, m Material, from string, data map[string][]byte, sink Sink) {
	changed, err := sink(data)
	switch {
	case err != nil:
		log.Error("refused "+string(m)+" update; keeping the last good one in force", "source", from, "error", err)
		if rec != nil && obj != nil {
			rec.Eventf(obj, corev1.EventTypeWarning, m.refused(), "meshid-ca refused this %s and keeps the last good one in force: %v", m, err)
		}
	case changed:
		log.Debug("loaded "+string(m), "source", from)
		if rec != nil && obj != nil {
			rec.Eventf(obj, corev1.EventTypeNormal, m.loaded(), "meshid-ca loaded this %s", m)
		}
	}
}
