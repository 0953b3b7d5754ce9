package cli

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// TuneGC sets the garbage collector for the kind of process meshid runs:
// GOGC=gogc unless $GOGC is set, and, unless $GOMEMLIMIT is set, a soft
// memory limit of 90 % of the container's cgroup (v2) memory limit when
// there is one, so that a generous GOGC never walks the process into its
// OOM kill: the collector works harder as the limit nears instead.
//
// meshid-ca trades memory for signing throughput (GOGC 400: most of what it
// allocates per certificate dies at once). meshid-proxy keeps Go's default
// (GOGC 100): at GOGC 50 its held-connection memory was 10 % lower, but
// with one core its latency tail was worse in make bench.
func TuneGC(gogc int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gogc)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit, ok := cgroupMemoryLimit(); ok {
			debug.SetMemoryLimit(limit / 10 * 9)
		}
	}
}

// cgroupMemoryLimit reads the cgroup v2 memory limit of this process.
func cgroupMemoryLimit() (int64, bool) {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0, false
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}
