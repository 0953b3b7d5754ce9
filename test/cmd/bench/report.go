package main

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshid/meshid/test/bench"
)

// handWritten marks the end of the generated part of the report: what
// follows it in the existing file (the profiling notes) is kept.
const handWritten = "<!-- Everything below this line is written by hand and kept by make bench. -->"

func (r *runner) report(only, out string, took time.Duration) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	med := func(name string) float64 { return r.fig(name).Median() }
	cell := r.cell

	w("# Benchmarks")
	w("")
	w("Written by `make bench` (test/cmd/bench) on %s, in %s. Reproduce: `make bench` (or `make bench BENCH_FLAGS=\"--runs 5\"`).", time.Now().UTC().Format("2006-01-02 15:04 MST"), took.Round(time.Second))
	w("")
	w("**Machine:** %s. **Method:** every server under measurement (meshid-ca, SPIRE server, the proxies, nginx, the raw loops) runs pinned to CPU %s with GOMAXPROCS=1 (nginx: one worker); the load, the apps, etcd and kube-apiserver run on CPU %s. So the figures are **per core**. Each figure is the median of %d runs of %s; `±` is half the spread between the slowest and the fastest run, as a percentage of the median: how noisy it was.",
		machine()+", meshid built with "+goVersionOf(filepath.Join(r.bin, "meshid-ca")), r.server.CPUs, r.loadCPUs, r.runs, r.duration)
	w("")

	if only == "" || only == "ca" {
		w("## CA issuance")
		w("")
		w("meshid-ca over gRPC with TLS 1.3, one connection per client, token reviews cached (one service account), real kube-apiserver; the raw limit (measured right before every meshid-ca run, so it has more runs) is a tight Go loop in a process on the same core that parses and verifies the same CSR and signs the same leaf template with the same issuer key (no network, no token, no audit log). SPIRE server %s mints with `MintX509SVID` on its admin socket, same concurrency, same core.", "v1.13.3")
		w("")
		head := "| | "
		sep := "|---|"
		for _, c := range r.concurrency {
			head += fmt.Sprintf("c=%d | ", c)
			sep += "---|"
		}
		w("%s", strings.TrimSpace(head))
		w("%s", sep)
		row := func(label string, f func(c int) string) {
			line := "| " + label + " |"
			for _, c := range r.concurrency {
				line += " " + f(c) + " |"
			}
			w("%s", line)
		}
		row("raw limit (certificates/s)", func(int) string { return cell("ca/raw") })
		row("**meshid-ca** (certificates/s)", func(c int) string { return cell(fmt.Sprintf("ca/meshid/c%d/rate", c)) })
		row("meshid-ca / raw limit, % (goal ≥ 80; each run against the raw limit right before it)", func(c int) string {
			return cell(fmt.Sprintf("ca/meshid/c%d/share", c))
		})
		row("meshid-ca p50 (ms)", func(c int) string { return cell(fmt.Sprintf("ca/meshid/c%d/p50", c)) })
		row("meshid-ca p99 (ms) (goal < 5 at c=64)", func(c int) string { return cell(fmt.Sprintf("ca/meshid/c%d/p99", c)) })
		if r.spireBin != "" {
			row("SPIRE server (certificates/s)", func(c int) string { return cell(fmt.Sprintf("ca/spire/c%d/rate", c)) })
			row("SPIRE p50 (ms)", func(c int) string { return cell(fmt.Sprintf("ca/spire/c%d/p50", c)) })
			row("SPIRE p99 (ms)", func(c int) string { return cell(fmt.Sprintf("ca/spire/c%d/p99", c)) })
			row("meshid-ca / SPIRE", func(c int) string {
				return bench.Ratio(med(fmt.Sprintf("ca/meshid/c%d/rate", c)), med(fmt.Sprintf("ca/spire/c%d/rate", c)))
			})
		}
		w("")
		c := slicesMax(r.concurrency)
		w("At c=%d the clients wait for each other: a closed loop of %d clients on one core has a mean latency of %d ÷ throughput (Little's law), %.0f ms at the raw limit itself, so a p99 under 5 ms there would need %.0f certificates/s on one core. What a proxy sees in a real storm is an open load: the table below offers %.0f %% of each server's own capacity from %d clients and measures latency from when each request was due.", c, c, c, 1000*float64(c)/med("ca/raw"), float64(c)/0.005, 100*pacedShare, c)
		w("")
		w("| open load, %d clients | offered (certificates/s) | p50 (ms) | p99 (ms) |", c)
		w("|---|---|---|---|")
		for _, s := range []struct{ name, prefix string }{{"**meshid-ca**", "ca/meshid"}, {"SPIRE server", "ca/spire"}} {
			if len(r.fig(s.prefix+"/paced/p99").Runs) > 0 {
				w("| %s | %.0f | %s | %s |", s.name, pacedShare*med(fmt.Sprintf("%s/c%d/rate", s.prefix, c)), cell(s.prefix+"/paced/p50"), cell(s.prefix+"/paced/p99"))
			}
		}
		w("")
		w("RSS after the load: meshid-ca %s MiB; SPIRE server %s MiB.", cell("ca/meshid/rss"), cell("ca/spire/rss"))
		w("")
		w("### Restart storm")
		w("")
		w("1,000 distinct service accounts, each with a token never seen before (one TokenReview each), 64 at a time, against a meshid-ca process started cold for each run. The reference is kube-apiserver reviewing 1,000 new tokens on its own from the same client. SPIRE mints 1,000 distinct SPIFFE IDs from a cold server (it reviews no token).")
		w("")
		w("| | seconds for 1,000 | certificates/s | vs TokenReview alone |")
		w("|---|---|---|---|")
		storm := func(label, name string) {
			s := med(name)
			w("| %s | %s | %.0f | %s |", label, cell(name), 1000/s, bench.Ratio(med("storm/tokenreview/seconds"), s))
		}
		storm("**meshid-ca**, cold", "storm/meshid/seconds")
		storm("TokenReview alone (reference)", "storm/tokenreview/seconds")
		if r.spireBin != "" {
			storm("SPIRE server, cold", "storm/spire/seconds")
		}
		w("")
		w("meshid-ca was ready %s s after its process started.", cell("storm/meshid/ready"))
		w("")
	}

	if s := r.jwtSection(); s != "" && only == "" {
		w("%s", s)
	}
	if only == "" || only == "dataplane" {
		w("## Data plane")
		w("")
		w("client → outbound proxy → mTLS (TLS 1.3, client certificates, P-256) → inbound proxy → app. meshid: two meshid-proxies with SVIDs from meshid-ca, the client checking the server's SPIFFE ID and the server authorizing the client's. nginx %s: two `stream` proxies with the same kind of SVIDs from the same CA, `ssl_verify_client on`, session reuse off on both sides; its outbound side does not verify the server (nginx checks names by DNS SAN, which SVIDs lack, and knows no SPIFFE ID), so it does less than meshid. Direct: the client talks to the app.", nginxVersion(r.nginx))
		w("")
		w("### Latency at %d requests/s", latencyRate)
		w("")
		w("1 KiB HTTP/1.1 POST, 1 KiB response, on kept-alive connections (one HTTP client per path, its connections opened in a warm-up round and kept), vegeta at a fixed rate. The paths take turns in rounds of %s, so that a pause of the machine, which lasts seconds on this VM, falls on all of them alike; each run is %d rounds per path, its quantiles over all their requests, and the figures are medians of %d runs.", latencyRound, int(3*r.duration/latencyRound), r.runs)
		w("")
		w("| path | p50 (ms) | p99 (ms) | p99.9 (ms) | added p50 | added p99 | added p99.9 |")
		w("|---|---|---|---|---|---|---|")
		for _, p := range []string{"direct", "meshid", "nginx"} {
			if len(r.fig("lat/"+p+"/p50").Runs) == 0 {
				continue
			}
			added := func(q string) string {
				if p == "direct" {
					return "—"
				}
				return fmt.Sprintf("%.3f", med("lat/"+p+"/"+q)-med("lat/direct/"+q))
			}
			w("| %s | %s | %s | %s | %s | %s | %s |", p, cell("lat/"+p+"/p50"), cell("lat/"+p+"/p99"), cell("lat/"+p+"/p999"),
				added("p50"), added("p99"), added("p999"))
		}
		addedRatio := func(q string) string {
			return bench.Ratio(med("lat/meshid/"+q)-med("lat/direct/"+q), med("lat/nginx/"+q)-med("lat/direct/"+q))
		}
		w("")
		w("meshid's added latency as a share of nginx's: p50 %s, p99 %s (goal ≤ 100 %%), p99.9 %s.", addedRatio("p50"), addedRatio("p99"), addedRatio("p999"))
		w("")
		if len(r.fig("cpu/meshid").Runs) > 0 {
			w("What the proxies spent per request in the latency runs, both proxies of the pair together (from /proc: user and system time, and context switches over every thread; a request crosses each proxy twice):")
			w("")
			w("| proxies | CPU per request (µs) | context switches per request |")
			w("|---|---|---|")
			for _, p := range []string{"meshid", "nginx"} {
				if len(r.fig("cpu/"+p).Runs) > 0 {
					w("| %s | %s | %s |", p, cell("cpu/"+p), cell("switches/"+p))
				}
			}
			w("")
		}
		w("### New connections")
		w("")
		w("%d clients each open a connection, send one request, read the response and close, for %s per run. Through a proxy pair every client connection is a new mTLS handshake between the proxies. The raw limit is Go's crypto/tls with the same certificates and keys, both sides in one process on the proxies' core, one byte each way.", connWorkers, r.duration)
		w("")
		w("| path | connections/s | vs raw crypto/tls |")
		w("|---|---|---|")
		for _, p := range []string{"raw", "direct", "meshid", "nginx"} {
			if len(r.fig("conns/"+p).Runs) > 0 {
				w("| %s | %s | %s |", p, cell("conns/"+p), bench.Ratio(med("conns/"+p), med("conns/raw")))
			}
		}
		w("")
		w("### Bulk throughput")
		w("")
		w("One connection carries %d MiB from the app to the client.", bulkBytes>>20)
		w("")
		w("| path | MB/s | vs nginx (goal ≥ 80 %%) |")
		w("|---|---|---|")
		for _, p := range []string{"direct", "meshid", "nginx"} {
			if len(r.fig("bulk/"+p).Runs) > 0 {
				w("| %s | %s | %s |", p, cell("bulk/"+p), bench.Ratio(med("bulk/"+p), med("bulk/nginx")))
			}
		}
		w("")
		w("### Proxy memory (RSS, MiB)")
		w("")
		w("Per proxy process (nginx: master and worker together). Idle: ready, before any load. Held: %d connections open through the pair, one request done on each, right after idle (the cost of the connections); and again after all the load runs (what the allocator kept from them counts too, so it also shows what a latency collapse left behind). Load: the peak during the latency runs, which includes what the held connections left. Goals for meshid-proxy: idle < 20 MiB, held < 64 MiB.", heldConns)
		w("")
		w("| proxy | idle | %d connections held | held, after the load runs | under load |", heldConns)
		w("|---|---|---|---|---|")
		for _, p := range []string{"meshid", "nginx"} {
			for i, role := range []string{"outbound (web)", "inbound (db)"} {
				if len(r.fig(fmt.Sprintf("rss/idle/%s/%d", p, i)).Runs) == 0 {
					continue
				}
				w("| %s %s | %s | %s | %s | %s |", p, role, cell(fmt.Sprintf("rss/idle/%s/%d", p, i)),
					cell(fmt.Sprintf("rss/held/%s/%d", p, i)), cell(fmt.Sprintf("rss/held-after/%s/%d", p, i)), cell(fmt.Sprintf("rss/load/%s/%d", p, i)))
			}
		}
		w("")
		if s := r.transparentSection(); s != "" {
			w("%s", s)
		}
	}
	if s := r.requestsSection(); s != "" && only == "" {
		w("%s", s)
	}
	if len(r.notes) > 0 {
		w("## Notes from this run")
		w("")
		for _, n := range r.notes {
			w("- %s", n)
		}
		w("")
	}
	w("%s", handWritten)
	return b.String() + keptTail(out)
}

// cell is figure name as a table shows it; n/a when it was not measured.
func (r *runner) cell(name string) string {
	if len(r.fig(name).Runs) == 0 {
		return "n/a"
	}
	return r.fig(name).String()
}

// keptTail is the hand-written part of the existing report at path.
func keptTail(path string) string {
	old, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	_, tail, ok := strings.Cut(string(old), handWritten)
	if !ok {
		return ""
	}
	return tail
}

// machine describes the CPU, memory and software.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs%s, Linux %s", model, onlineCPUs(), mem, strings.TrimSpace(string(kernel)))
}

func nginxVersion(bin string) string {
	if bin == "" {
		return ""
	}
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return ""
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "nginx/")
	return v
}

// goVersionOf is the Go release that built the binary at path.
func goVersionOf(path string) string {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return "an unknown Go release"
	}
	return info.GoVersion
}
