package cli

import (
	"net/http"
	"net/http/pprof"

	"github.com/spf13/pflag"
)

// ProfilingFlag registers --profiling, which serves Go's pprof profiles on
// the admin listener under /debug/pprof/. It is off by default: profiles
// show internals and cost CPU while taken.
func ProfilingFlag(fs *pflag.FlagSet, on *bool) {
	fs.BoolVar(on, "profiling", false, "serve Go pprof profiles under /debug/pprof/ on --admin-listen (for performance work; keep the admin port private)")
}

// ProfilingHandlers are the pprof endpoints, by mux pattern; nil when off.
func ProfilingHandlers(on bool) map[string]http.Handler {
	if !on {
		return nil
	}
	return map[string]http.Handler{
		"GET /debug/pprof/":        http.HandlerFunc(pprof.Index),
		"GET /debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
		"GET /debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"GET /debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
		"GET /debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
	}
}
