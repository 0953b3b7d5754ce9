package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/test/bench"
)

// fleetWrite is one update of a fleet ConfigMap, as the watch saw it.
type fleetWrite struct {
	at         time.Time
	name       string
	size, data int
	shard      bool
}

// watchFleet records every update of the fleet ConfigMaps until ctx ends.
func (s *sim) watchFleet(ctx context.Context) func() []fleetWrite {
	var (
		mu     sync.Mutex
		writes []fleetWrite
	)
	go func() {
		for ctx.Err() == nil {
			w, err := s.kube.CoreV1().ConfigMaps(bench.CANamespace).Watch(ctx, metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
			if err != nil {
				sleep(ctx, time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				cm, ok := ev.Object.(*corev1.ConfigMap)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
					continue
				}
				mu.Lock()
				_, shard := cm.Data[fleet.ShardKey]
				writes = append(writes, fleetWrite{at: time.Now(), name: cm.Name, size: cm.Size(), data: len(cm.Data[fleet.ConfigMapKey]) + len(cm.Data[fleet.ShardKey]), shard: shard})
				mu.Unlock()
			}
			w.Stop()
		}
	}()
	return func() []fleetWrite {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(writes)
	}
}

// apiMetrics scrapes kube-apiserver's /metrics.
func (s *sim) apiMetrics(ctx context.Context) (bench.Samples, error) {
	b, err := s.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	return bench.ParseMetrics(string(b))
}

// etcdDBSize is etcd's database size in bytes, or -1 if unknown.
func (s *sim) etcdDBSize(ctx context.Context) float64 {
	for _, a := range s.cluster.APIServerArgs() {
		if url, ok := strings.CutPrefix(a, "--etcd-servers="); ok {
			m, err := bench.Scrape(ctx, nil, strings.Split(url, ",")[0]+"/metrics")
			if err == nil {
				return m.Sum("etcd_mvcc_db_total_size_in_bytes", nil)
			}
		}
	}
	return -1
}

// steady measures a window of heartbeats and fleet reports: the CAs' CPU
// per heartbeat, and what the fleet reports write to the API server.
func (s *sim) steady(ctx context.Context, hb *heartbeatCounts) error {
	// One heartbeat round so every proxy is filed, and a fleet report
	// interval (5 s) so it is published.
	sleep(ctx, s.o.heartbeat+6*time.Second)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	writes := s.watchFleet(wctx)
	sleep(ctx, time.Second) // the watch's initial list falls before the window
	// The shards of the set-up settle (each written once it stops
	// changing, within the byte budget): the window starts once none has
	// been written for 15 s, at most 2 minutes on.
	watched := time.Now()
	settled := waitUntil(ctx, 2*time.Minute, func() bool {
		last := watched
		for _, w := range writes() {
			if w.shard {
				last = w.at
			}
		}
		return time.Since(last) > 15*time.Second
	})
	if !settled {
		s.note("Shards were still being written 2 minutes after the set-up; the steady window includes them.")
	}
	log.Printf("steady state: shards settled %s after the set-up's heartbeat round", time.Since(watched).Round(time.Second))
	before, err := s.caStats(ctx, false)
	if err != nil {
		return err
	}
	apiBefore, err := s.apiMetrics(ctx)
	if err != nil {
		return err
	}
	dbBefore := s.etcdDBSize(ctx)
	okBefore, failedBefore := hb.ok.Load(), hb.failed.Load()
	start := time.Now()
	log.Printf("steady state: measuring %s", s.o.duration)
	profiled := s.profile(ctx, 1%len(s.cas), s.o.duration-time.Second)
	if !sleep(ctx, s.o.duration) {
		return ctx.Err()
	}
	window := time.Since(start)
	after, err := s.caStats(ctx, false)
	if err != nil {
		return err
	}
	apiAfter, err := s.apiMetrics(ctx)
	if err != nil {
		return err
	}
	dbAfter := s.etcdDBSize(ctx)
	profiled()
	beats, failed := hb.ok.Load()-okBefore, hb.failed.Load()-failedBefore

	var cpu time.Duration
	for r := range after {
		cpu += after[r].cpu - before[r].cpu
	}
	s.add("heartbeats", "ReportStatus calls accepted", "%.0f/s (%d in %s; %d refused or failed)", float64(beats)/window.Seconds(), beats, window.Round(time.Second), failed)
	if msg := hb.lastErr.Load(); failed > 0 && msg != nil {
		s.note("A heartbeat failed with: %s", *msg)
	}
	if calls := beats + failed; calls > 0 {
		s.add("heartbeats", "CA CPU per heartbeat", "%.0f µs (all the replicas' CPU in the window, fleet reports and held streams included, over every ReportStatus call, refused ones too)", float64(cpu.Microseconds())/float64(calls))
	}
	s.add("heartbeats", "CA CPU in the window", "%.0f ms/s over %d replicas", float64(cpu.Milliseconds())/window.Seconds(), len(after))

	// Fleet reports, as the watch saw them.
	var inWindow []fleetWrite
	for _, w := range writes() {
		if !w.at.Before(start) && w.at.Before(start.Add(window)) {
			inWindow = append(inWindow, w)
		}
	}
	names := map[string]int{}
	total, largest, largestData := 0, 0, 0
	for _, w := range inWindow {
		names[w.name] = max(names[w.name], w.size)
		total += w.size
		largest = max(largest, w.size)
		largestData = max(largestData, w.data)
	}
	perMin := float64(total) / window.Minutes()
	s.add("fleet reports", "fleet ConfigMaps updated in the window", "%d of %d replicas, %d updates", len(names), len(s.cas), len(inWindow))
	s.add("fleet reports", "bytes stored per minute (object size of every update)", "%.1f KiB/min", perMin/(1<<10))
	s.add("fleet reports", "largest fleet ConfigMap written in the window", "%.0f KiB (its data %.0f KiB; a shard may be 256 KiB)", float64(largest)/1024, float64(largestData)/1024)
	if err := s.fleetObjects(ctx); err != nil {
		return err
	}

	// The API server's view of every ConfigMap request (the fleet reports
	// are the only ConfigMap writers in the window).
	cm := map[string]string{"resource": "configmaps"}
	codes := map[string]float64{}
	for _, smp := range apiAfter {
		if smp.Name == "apiserver_request_total" && smp.Labels["resource"] == "configmaps" && smp.Labels["verb"] == "PUT" {
			codes[smp.Labels["code"]] += smp.Value - apiBefore.Sum("apiserver_request_total", smp.Labels)
		}
	}
	var codeList []string
	for c, v := range codes {
		if v > 0 {
			codeList = append(codeList, fmt.Sprintf("%s: %.0f", c, v))
		}
	}
	slices.Sort(codeList)
	s.add("fleet reports", "ConfigMap updates (PUT) by the API server's answer", "%s", strings.Join(codeList, ", "))
	body := apiAfter.Sum("apiserver_request_body_size_bytes_sum", cm) - apiBefore.Sum("apiserver_request_body_size_bytes_sum", cm)
	resp := apiAfter.Sum("apiserver_response_sizes_sum", map[string]string{"resource": "configmaps", "verb": "GET"}) -
		apiBefore.Sum("apiserver_response_sizes_sum", map[string]string{"resource": "configmaps", "verb": "GET"})
	s.add("fleet reports", "request bodies sent to the API server for ConfigMaps", "%.1f KiB/min (refused ones included); GET answers read back %.1f KiB/min", body/window.Minutes()/(1<<10), resp/window.Minutes()/(1<<10))
	if dbBefore >= 0 && dbAfter >= 0 {
		s.add("fleet reports", "etcd database growth", "%.1f MiB/min (%.0f → %.0f MiB; the API server compacts every 5 min)", (dbAfter-dbBefore)/window.Minutes()/(1<<20), dbBefore/(1<<20), dbAfter/(1<<20))
	}
	for r := range s.cas {
		if msg := firstLogLine(s.caCfgs[r].Dir+"/"+s.caCfgs[r].Name+".log", "cannot publish the fleet report"); msg != "" {
			s.note("Replica %d could not publish its fleet report: %s", r, msg)
			break
		}
	}
	return nil
}

// fleetView reads the fleet as rotate-anchor does (fleet.Read, then
// Merge), with the bytes it read.
func (s *sim) fleetView(ctx context.Context) (fleet.View, []corev1.ConfigMap, error) {
	cms, err := s.kube.CoreV1().ConfigMaps(bench.CANamespace).List(ctx, metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		return fleet.View{}, nil, fmt.Errorf("list the fleet ConfigMaps: %w", err)
	}
	now := time.Now()
	return fleet.Merge(fleet.Read(cms.Items, now), now, fleet.StaleAfter), cms.Items, nil
}

// fleetObjects describes the fleet ConfigMaps as they are, and whether
// the fleet view holds every proxy.
func (s *sim) fleetObjects(ctx context.Context) error {
	v, cms, err := s.fleetView(ctx)
	if err != nil {
		return err
	}
	largest, total, manifests := 0, 0, 0
	for _, cm := range cms {
		largest, total = max(largest, cm.Size()), total+cm.Size()
		if _, ok := cm.Data[fleet.ConfigMapKey]; ok {
			manifests++
		}
	}
	unread := 0
	for _, p := range v.Proxies {
		if p.StandIn() {
			unread++
		}
	}
	s.add("fleet reports", "fleet ConfigMaps (manifests + shards), the largest, all of them", "%d + %d, %.0f KiB, %.0f KiB", manifests, len(cms)-manifests, float64(largest)/1024, float64(total)/1024)
	s.add("fleet reports", "the fleet view (fleet.Read, as rotate-anchor reads it)", "%d proxies of %d, %d stand-ins, %d replicas", len(v.Proxies)-unread, len(s.f.proxies), unread, len(v.Replicas))
	return nil
}

// gate times the fleet view until every proxy and every replica it holds
// reports bundle sha with no stand-in: what stage Add waits for.
func (s *sim) gate(ctx context.Context, t0 time.Time, sha string, apiBefore bench.Samples) {
	var (
		v    fleet.View
		last []corev1.ConfigMap
	)
	ok := waitUntil(ctx, 3*time.Minute, func() bool {
		var err error
		if v, last, err = s.fleetView(ctx); err != nil {
			return false
		}
		if len(v.Proxies) < len(s.f.proxies) || len(v.Replicas) < len(s.cas) {
			return false
		}
		for _, r := range v.Replicas {
			if r.BundleSHA256 != sha {
				return false
			}
		}
		return len(v.Lagging(func(p fleet.Proxy) bool { return p.BundleSHA256 == sha })) == 0
	})
	if !ok {
		s.note("The fleet view did not show every proxy on the new bundle within 3 minutes: %d proxies, %d lagging.", len(v.Proxies), len(v.Lagging(func(p fleet.Proxy) bool { return p.BundleSHA256 == sha })))
		return
	}
	took := time.Since(t0)
	body := "?"
	if apiAfter, err := s.apiMetrics(ctx); err == nil {
		cm := map[string]string{"resource": "configmaps"}
		body = fmt.Sprintf("%.0f KiB", (apiAfter.Sum("apiserver_request_body_size_bytes_sum", cm)-apiBefore.Sum("apiserver_request_body_size_bytes_sum", cm))/1024)
	}
	s.add("bundle change", "from the ConfigMap update to the fleet view showing every proxy and replica on it (stage Add's gate; the simulated proxies report it at their next heartbeat, up to 10 s)", "%s; ConfigMap request bodies meanwhile %s", ms(took), body)

	// A shard deleted by hand: the gate must not pass.
	var victim string
	for _, cm := range last {
		if _, ok := cm.Data[fleet.ShardKey]; ok {
			victim = cm.Name
			break
		}
	}
	if victim == "" {
		return
	}
	if err := s.kube.CoreV1().ConfigMaps(bench.CANamespace).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
		s.note("Could not delete shard %s: %v", victim, err)
		return
	}
	v, _, _ = s.fleetView(ctx)
	lag := v.Lagging(func(p fleet.Proxy) bool { return p.BundleSHA256 == sha })
	held := len(lag) > 0 && strings.Contains(strings.Join(lag, " "), victim)
	s.add("bundle change", "shard "+victim+" deleted: the gate holds and names it", "%t (%d lagging)", held, len(lag))
}

// profile takes a CPU profile of replica r for d into the work folder
// (kept with --keep), in the background; wait blocks until it is written.
func (s *sim) profile(ctx context.Context, r int, d time.Duration) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.cas[r].Admin, int(d.Seconds()))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode == http.StatusOK {
			err = os.WriteFile(filepath.Join(s.work, fmt.Sprintf("meshid-ca-%d.pprof", r)), b, 0o644)
		}
		if err != nil {
			log.Printf("profile: %v", err)
		}
	}()
	return func() { <-done }
}

// firstLogLine returns the first line of the file that contains substr,
// cut to 400 bytes.
func firstLogLine(path, substr string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, substr) {
			if len(line) > 400 {
				line = line[:400] + "…"
			}
			return line
		}
	}
	return ""
}

// bundleChange adds the second anchor to the bundle ConfigMap and times
// its arrival on every proxy's bundle stream.
func (s *sim) bundleChange(ctx context.Context) error {
	cms := s.kube.CoreV1().ConfigMaps(bench.CANamespace)
	cm, err := cms.Get(ctx, bench.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cm.Data[bundle.Key] = string(s.pki.Anchor.CertPEM()) + string(s.anchor2.CertPEM())
	apiBefore, err := s.apiMetrics(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return err
	}
	n := len(s.f.proxies)
	got := func() int { return s.f.count(func(p *proxy) bool { return p.gotNew.Load() != 0 }) }
	if !waitUntil(ctx, 3*time.Minute, func() bool { return got() == n }) {
		s.note("The new bundle reached only %d of %d streams within 3 minutes.", got(), n)
	}
	var lat bench.Latencies
	for _, p := range s.f.proxies {
		if at := p.gotNew.Load(); at != 0 {
			lat = append(lat, time.Duration(at-t0.UnixNano()))
		}
	}
	s.add("bundle change", "from the ConfigMap update to the bundle on the stream", "p50 %s, p99 %s, max %s (%d of %d streams)",
		ms(lat.Quantile(0.5)), ms(lat.Quantile(0.99)), ms(lat.Quantile(1)), len(lat), n)
	s.gate(ctx, t0, s.f.newSHA, apiBefore)
	return nil
}

// restart stops replica 0 (SIGTERM, as a rollout does) and times its
// share's reconnection to the others, then starts it again.
func (s *sim) restart(ctx context.Context) error {
	const victim = 0
	var share []*proxy
	for _, p := range s.f.proxies {
		if p.on.Load() == victim && p.bundleUp.Load() != 0 {
			share = append(share, p)
		}
	}
	breaksBefore := make([]int64, len(share))
	for k, p := range share {
		breaksBefore[k] = p.breaks.Load()
	}
	// The victim's CPU drops out of cpuUsed once it is gone.
	cpu0 := s.cpuUsed()
	if u, err := s.cas[victim].Usage(); err == nil {
		cpu0 -= u.CPU
	}
	t0 := time.Now()
	// Kubernetes' default terminationGracePeriodSeconds.
	const grace = 30 * time.Second
	s.cas[victim].StopWithin(grace)
	_, exit := s.cas[victim].Exited()
	s.cas[victim] = nil
	stopped := time.Since(t0)
	exited := t0.Add(stopped)
	how := "exited by itself"
	if exit != nil {
		how = fmt.Sprintf("ended: %v (SIGKILL %s after the SIGTERM)", exit, grace)
	}
	back := func(up func(*proxy) int64) func() int {
		return func() int {
			n := 0
			for _, p := range share {
				if at := up(p); at > t0.UnixNano() {
					n++
				}
			}
			return n
		}
	}
	bundleUp := func(p *proxy) int64 { return p.bundleUp.Load() }
	dialed := func(p *proxy) int64 { return p.dialed.Load() }
	policyUp := func(p *proxy) int64 { return p.policyUp.Load() }
	if !waitUntil(ctx, 3*time.Minute, func() bool { return back(bundleUp)() == len(share) }) {
		s.note("After the restart only %d of %d bundle streams came back within 3 minutes.", back(bundleUp)(), len(share))
	}
	if s.o.policy && !waitUntil(ctx, 5*time.Minute, func() bool { return back(policyUp)() == len(share) }) {
		s.note("After the restart only %d of %d policy streams came back within 5 minutes.", back(policyUp)(), len(share))
	}
	busy, wall := s.cpuUsed()-cpu0, time.Since(t0)
	spread := func(up func(*proxy) int64) string {
		var lat bench.Latencies
		for _, p := range share {
			if at := up(p); at > t0.UnixNano() {
				lat = append(lat, time.Duration(at-t0.UnixNano()))
			}
		}
		return fmt.Sprintf("p50 %s, p99 %s, last %s", ms(lat.Quantile(0.5)), ms(lat.Quantile(0.99)), ms(lat.Quantile(1)))
	}
	// Why the share's streams broke, and how often each did before it
	// was back.
	why := map[string]int{}
	var tries bench.Latencies // counts, as durations, for Quantile
	for k, p := range share {
		tries = append(tries, time.Duration(p.breaks.Load()-breaksBefore[k]))
		if msg := p.lastBreak.Load(); msg != nil {
			m := *msg
			if len(m) > 160 {
				m = m[:160] + "…"
			}
			why[m]++
		}
	}
	for m, c := range why {
		if c*100 >= len(share) { // the reasons of at least 1 % of the share
			s.note("After the restart, %d of the %d proxies' bundle streams last broke with: %s", c, len(share), m)
		}
	}
	s.add("restart", "breaks of each proxy's bundle stream until it was back", "p50 %d, max %d", int64(tries.Quantile(0.5)), int64(tries.Quantile(1)))
	s.add("restart", "replica stopped (SIGTERM until exit)", "%s, %d proxies on it; %s", ms(stopped), len(share), how)
	s.add("restart", "its share's new connections dialled", "%s after the SIGTERM", spread(dialed))
	s.add("restart", "its share's bundle streams open on another replica", "%s after the SIGTERM (the replica had exited %s after it)", spread(bundleUp), ms(exited.Sub(t0)))
	if s.o.policy {
		s.add("restart", "its share's policy streams open on another replica", "%s after the SIGTERM", spread(policyUp))
	}
	s.add("restart", "CPU of the other replicas and the simulator until the share was back", "%.1f s in %.1f s (%d CPUs)", busy.Seconds(), wall.Seconds(), runtime.NumCPU())
	t1 := time.Now()
	again := s.caCfgs[victim]
	again.Name += "-restarted"
	ca, err := bench.StartCA(again)
	if err != nil {
		return fmt.Errorf("restart replica %d: %w", victim, err)
	}
	s.cas[victim] = ca
	s.add("restart", "replica ready again", "%s after it was started", ms(time.Since(t1)))
	return nil
}

// cpuUsed is the CPU time of the simulator and the live replicas so far.
func (s *sim) cpuUsed() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, ca := range s.cas {
		if ca != nil {
			if u, err := ca.Usage(); err == nil {
				total += u.CPU
			}
		}
	}
	return total
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// markdown is the report of the run.
func (s *sim) markdown(took time.Duration) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	load, _ := os.ReadFile("/proc/loadavg")
	w("#### N = %d proxies, %d replicas", len(s.f.proxies), s.o.replicas)
	w("")
	w("%s UTC, %s, %d CPUs, load average at the end %s; `scale %s`; took %s.", time.Now().UTC().Format("2006-01-02 15:04"), runtime.Version(), runtime.NumCPU(),
		strings.Join(strings.Fields(string(load))[:3], " "), strings.Join(os.Args[1:], " "), took.Round(time.Second))
	w("")
	w("| | |")
	w("|---|---|")
	for _, r := range s.rows {
		w("| %s: %s | %s |", r.section, r.what, r.value)
	}
	for _, n := range s.notes {
		w("")
		w("- %s", n)
	}
	w("")
	return b.String()
}
