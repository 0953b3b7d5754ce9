package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshid/meshid/test/bench"
)

// The request-policy pair (issue 19): the explicit meshid pair of the
// data plane twice, as a byte pipe (requests-l4) and with requestRules
// request rules on db's echo port (requests-rules), the same kept-alive
// latency load through both.
const (
	requestsNS   = "rq"
	requestRules = 20
	l4Path       = "requests-l4"
	rulesPath    = "requests-rules"

	requestsBegin = "<!-- The request-policy pair: written by make bench, or alone by meshid-bench --only requests. -->"
	requestsEnd   = "<!-- End of the request-policy pair. -->"
)

// requestPolicy is db's --policy file: the echo port (listen port port)
// with rules request rules, of which all but the last miss the latency
// load's POST / by path and the last allows it, so every request is
// allowed after rules-1 misses; the bulk port is cluster-authenticated.
func requestPolicy(port, rules int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "default: cluster-authenticated\nports:\n- port: %d\n  mode: cluster-authenticated\n  requests:\n", port)
	for i := 1; i < rules; i++ {
		fmt.Fprintf(&b, "  - name: miss-%02d\n    matches:\n    - {method: POST, path: {type: PathPrefix, value: /miss-%02d}}\n", i, i)
	}
	b.WriteString("  - name: load\n    matches:\n    - {method: POST, path: {type: Exact, value: /}}\n")
	return b.String()
}

// requests measures the request-policy pair against the L4 pair.
func (r *runner) requests(ctx context.Context) error {
	env, err := r.newPairEnv(ctx, requestsNS, "meshid-ca-requests")
	if err != nil {
		return err
	}
	defer env.close()

	withRules := func(in string) ([]string, error) {
		_, p, err := net.SplitHostPort(in)
		if err != nil {
			return nil, err
		}
		var port int
		if _, err := fmt.Sscan(p, &port); err != nil {
			return nil, err
		}
		file := filepath.Join(r.work, "requests-policy.yaml")
		return []string{"--policy", file}, os.WriteFile(file, []byte(requestPolicy(port, requestRules)), 0o600)
	}
	var paths []*path
	for _, pair := range []struct {
		name  string
		authz func(string) ([]string, error)
	}{{l4Path, nil}, {rulesPath, withRules}} {
		p, err := r.meshPair(env.ca, env.toks, env.anchorsFile, env.app, requestsNS, pair.name, pair.authz)
		if err != nil {
			return err
		}
		defer func() {
			for _, proc := range p.procs {
				proc.Stop()
			}
		}()
		paths = append(paths, p)
	}
	if err := r.latency(paths); err != nil {
		return err
	}
	for _, p := range paths {
		log.Printf("%s: latency p50 %s p99 %s p99.9 %s ms; %s µs CPU per request", p.name,
			r.fig("lat/"+p.name+"/p50"), r.fig("lat/"+p.name+"/p99"), r.fig("lat/"+p.name+"/p999"), r.fig("cpu/"+p.name))
	}
	return nil
}

// requestsSection is the request-policy pair against the L4 pair, from
// this run's figures; empty when it did not run.
func (r *runner) requestsSection() string {
	if len(r.fig("lat/"+rulesPath+"/p50").Runs) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	med := func(name string) float64 { return r.fig(name).Median() }
	cell := r.cell
	added := func(q string) float64 { return med("lat/"+rulesPath+"/"+q) - med("lat/"+l4Path+"/"+q) }
	w("%s", requestsBegin)
	w("### Request policy")
	w("")
	w("The explicit meshid pair of the data plane twice, taking turns in rounds of %s at %d requests/s with the data plane's latency load (1 KiB HTTP/1.1 POST on kept-alive connections, vegeta), %d rounds per pair and run: as a byte pipe (`%s`, no request rules, `--default-mode cluster-authenticated`) and with %d request rules on db's echo port (`%s`, a `--policy` file: %d rules that miss the load's `POST /` by path, then the one that allows it, so every request is parsed and allowed after %d misses). HTTP/1.1 only: the load (vegeta over `net/http` to plain `http://`) and the echo app speak HTTP/1.1, so HTTP/2 (h2c) is not measured yet. CPU per request is both proxies of a pair together, from /proc.", latencyRound, latencyRate, int(3*r.duration/latencyRound), l4Path, requestRules, rulesPath, requestRules-1, requestRules-1)
	w("")
	w("| pair | p50 (ms) | p99 (ms) | p99.9 (ms) | CPU per request (µs) | context switches per request |")
	w("|---|---|---|---|---|---|")
	for _, p := range []string{l4Path, rulesPath} {
		w("| %s | %s | %s | %s | %s | %s |", p, cell("lat/"+p+"/p50"), cell("lat/"+p+"/p99"), cell("lat/"+p+"/p999"), cell("cpu/"+p), cell("switches/"+p))
	}
	w("")
	w("Added by %d request rules against the L4 pair: p50 %+.3f ms, p99 %+.3f ms (goal ≤ +0.3), p99.9 %+.3f ms; CPU per request %s of the L4 pair's.",
		requestRules, added("p50"), added("p99"), added("p999"), bench.Ratio(med("cpu/"+rulesPath), med("cpu/"+l4Path)))
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		w("")
		w("The machine's load average when these were written (1, 5, 15 min; it has %d CPUs): %s. Other work on it lengthens both pairs' tails alike, so the tails compare only within one run.", onlineCPUs(), strings.Join(strings.Fields(string(load))[:3], ", "))
	}
	w("%s", requestsEnd)
	return b.String()
}
