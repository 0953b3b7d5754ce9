//go:build soak

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshid/meshid/rotation"
)

// TestSoak runs for $MESHID_SOAK_DURATION (default 30m; `make soak`) with a
// 2-minute leaf TTL: five proxy pairs carry traffic and renew at half life,
// and a storm client renews ten more service accounts every 6 s each, ten
// times a proxy's rate. No request may fail, and neither the CA nor any
// proxy may grow in goroutines or memory once warm.
//
// It is built only with -tags soak, so `make test` never runs it.
func TestSoak(t *testing.T) {
	duration := 30 * time.Minute
	if v := os.Getenv("MESHID_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MESHID_SOAK_DURATION=%q: %v", v, err)
		}
		duration = d
	}
	const (
		pairs      = 5
		stormSAs   = 10
		stormEvery = 6 * time.Second // a 2m leaf renews at about 1m: 10x
		sampleTick = time.Minute
	)
	warm := min(3*time.Minute, duration/4)

	ca := startCA(t, "--leaf-ttl", "2m")
	watched := map[string]*process{"ca": ca.process}
	var traffic []*traffic
	for i := range pairs {
		p := newPair(t, ca, fmt.Sprintf("soak%d", i))
		watched[fmt.Sprintf("web%d", i)] = p.web.process
		watched[fmt.Sprintf("db%d", i)] = p.db.process
		traffic = append(traffic, startTrafficAt(p.webOut, 50*time.Millisecond, 250*time.Millisecond))
	}

	ns := namespace(t, "storm")
	var stormOK, stormFailed atomic.Int64
	var stormErr atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range stormSAs {
		sa := fmt.Sprintf("storm-%d", i)
		serviceAccount(t, ns, sa)
		tok := token(t, ns, sa, audience, nil)
		go func() {
			tick := time.NewTicker(stormEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := rotation.Certify(ctx, ca.client, tok, time.Now()); err != nil && ctx.Err() == nil {
					stormFailed.Add(1)
					stormErr.CompareAndSwap(nil, err.Error())
					continue
				}
				stormOK.Add(1)
			}
		}()
	}

	type sample struct {
		at                 time.Duration
		goroutines, rssMiB float64
	}
	samples := map[string][]sample{}
	start := time.Now()
	tick := time.NewTicker(sampleTick)
	defer tick.Stop()
	for time.Since(start) < duration {
		<-tick.C
		for name, p := range watched {
			samples[name] = append(samples[name], sample{
				at:         time.Since(start).Round(time.Second),
				goroutines: p.metric(t, "go_goroutines"),
				rssMiB:     p.metric(t, "process_resident_memory_bytes") / (1 << 20),
			})
		}
	}
	cancel()

	var report strings.Builder
	for name, ss := range samples {
		fmt.Fprintf(&report, "%-5s", name)
		for _, s := range ss {
			fmt.Fprintf(&report, " %s:%.0fg/%.1fMiB", s.at, s.goroutines, s.rssMiB)
		}
		report.WriteString("\n")
		// Warm peak versus the last third's peak.
		var warmG, warmR, lateG, lateR float64
		for i, s := range ss {
			if s.at < warm {
				continue
			}
			if i >= len(ss)*2/3 {
				lateG, lateR = max(lateG, s.goroutines), max(lateR, s.rssMiB)
			} else {
				warmG, warmR = max(warmG, s.goroutines), max(warmR, s.rssMiB)
			}
		}
		if warmG == 0 {
			continue // too short a run to compare
		}
		if lateG > warmG*1.1+5 {
			t.Errorf("%s: goroutines grew from %.0f (warm peak) to %.0f (late peak)", name, warmG, lateG)
		}
		if lateR > warmR*1.25+2 {
			t.Errorf("%s: RSS grew from %.1f MiB (warm peak) to %.1f MiB (late peak)", name, warmR, lateR)
		}
	}
	t.Logf("samples (uptime:goroutines/RSS):\n%s", report.String())
	t.Logf("storm: %d certificates, %d failed", stormOK.Load(), stormFailed.Load())
	if stormFailed.Load() > 0 {
		t.Errorf("%d storm renewals failed; first: %v", stormFailed.Load(), stormErr.Load())
	}
	var renewals float64
	for name, p := range watched {
		if name != "ca" {
			renewals += p.metric(t, `meshid_proxy_renewals_total{result="ok"}`)
		}
	}
	t.Logf("proxy renewals: %.0f ok", renewals)
	for _, tr := range traffic {
		tr.end(t)
	}
}
