// Command bench is `make bench`: it measures meshid-ca and meshid-proxy on
// this machine, side by side with the machine's limit and with real peers
// (SPIRE server, nginx), and writes docs/benchmarks.md.
//
// The servers under measurement run pinned to the last CPU with
// GOMAXPROCS=1; the load, the control plane and the apps run on the other
// CPUs (make bench starts this program under taskset). Figures are per
// core, and every figure is the median of --runs runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshid/meshid/test/bench"
	"github.com/meshid/meshid/test/cluster"
)

const usage = `bench measures meshid against the limit of this machine and against real
peers, and writes the results as Markdown.

Usage:
  bench [flags]            run the scenarios, write --out
  bench raw-limit [flags]  (internal) sign in a tight loop, print certificates/s
  bench raw-tls [flags]    (internal) mTLS handshakes in a tight loop, print connections/s
  bench echo --listen A    (internal) the transparent pods' app: the echo server on A
  bench raw-jwt [flags]    (internal) ES256 JWT signing in a tight loop, print JWTs/s

It needs the meshid binaries (--bin, from make build), the control-plane
binaries (test/controlplane/install.sh), spire-server (--spire, from
test/bench/spire-install.sh; empty skips SPIRE), nginx and taskset; the
transparent pair needs root and ip(8) (network namespaces), else it is
skipped. Run it as make bench does: taskset -c 0 bin/meshid-bench ...
--only transparent measures the latency and new connections of every path
(the transparent pair among them) and rewrites only the transparent section
of --out. --only requests measures the explicit meshid pair's latency with
and without 20 request rules on the db port and rewrites only its section.

Flags:
`

type runner struct {
	bin, spireBin, nginx string
	work                 string
	runs                 int
	duration             time.Duration
	concurrency          []int
	server               bench.Pinned // where the servers under measurement run
	loadCPUs             string
	cluster              *cluster.Cluster
	kube                 kubernetes.Interface
	pki                  *bench.PKI
	profiles             string // folder for CPU profiles; empty: none
	figures              map[string]*bench.Figure
	notes                []string
}

func (r *runner) fig(name string) *bench.Figure {
	f, ok := r.figures[name]
	if !ok {
		f = &bench.Figure{}
		r.figures[name] = f
	}
	return f
}

func (r *runner) note(format string, args ...any) {
	if n := fmt.Sprintf(format, args...); !slices.Contains(r.notes, n) {
		r.notes = append(r.notes, n)
	}
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "raw-limit":
		err = rawLimitMain(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "raw-tls":
		err = rawTLSMain(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "echo":
		err = echoMain(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "raw-jwt":
		err = rawJWTMain(os.Args[2:])
	default:
		err = runMain(os.Args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func runMain(args []string) error {
	fs := newFlagSet("bench")
	r := &runner{figures: map[string]*bench.Figure{}}
	fs.StringVar(&r.bin, "bin", "bin", "folder of meshid-ca and meshid-proxy (make build)")
	fs.StringVar(&r.spireBin, "spire", "", "folder of spire-server v1.13.3 (test/bench/spire-install.sh); empty skips SPIRE")
	fs.StringVar(&r.nginx, "nginx", "/usr/sbin/nginx", "nginx binary; empty skips nginx")
	fs.IntVar(&r.runs, "runs", 3, "runs of every scenario; figures are medians")
	fs.DurationVar(&r.duration, "duration", 5*time.Second, "length of one timed run")
	out := fs.String("out", "docs/benchmarks.md", "Markdown report to write")
	only := fs.String("only", "", "run only this part: ca, jwt, dataplane, transparent (latency and new connections of every path, the transparent pair's section of --out rewritten) or requests (the explicit pair with and without 20 request rules, its section of --out rewritten)")
	conc := fs.String("concurrency", "1,16,64", "CA client concurrencies")
	keep := fs.Bool("keep", false, "keep the work folder (logs) after the run")
	fs.StringVar(&r.profiles, "profiles", "", "write CPU profiles (pprof) of meshid-ca and meshid-proxy under load to this folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, f := range strings.Split(*conc, ",") {
		var c int
		if _, err := fmt.Sscan(f, &c); err != nil || c < 1 {
			return fmt.Errorf("--concurrency: %q is not a positive number", f)
		}
		r.concurrency = append(r.concurrency, c)
	}
	cpus := onlineCPUs()
	if cpus < 2 {
		return errors.New("bench needs two CPUs: one for the servers under measurement, one for the load")
	}
	last := cpus - 1
	r.server = bench.Pinned{CPUs: fmt.Sprint(last), GOMAXPROCS: 1}
	r.loadCPUs = fmt.Sprintf("0-%d", last-1)
	if last == 1 {
		r.loadCPUs = "0"
	}
	if runtime.NumCPU() != cpus-1 {
		// Run the load side, and all it starts, off the servers' CPU.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := bench.Pinned{CPUs: r.loadCPUs}.Command(self, args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	}
	for _, name := range []string{"meshid-ca", "meshid-proxy", "meshid-init"} {
		if _, err := os.Stat(filepath.Join(r.bin, name)); err != nil {
			return fmt.Errorf("%s not found in --bin %s: run make build first", name, r.bin)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if r.work, err = os.MkdirTemp("", "meshid-bench-"); err != nil {
		return err
	}
	if *keep {
		log.Printf("work folder (kept): %s", r.work)
	} else {
		defer os.RemoveAll(r.work)
	}

	cpbin, err := cluster.Binaries(ctx)
	if err != nil {
		return err
	}
	log.Print("starting etcd and kube-apiserver")
	if r.cluster, err = cluster.Start(ctx, cluster.Config{BinDir: cpbin, Dir: filepath.Join(r.work, "cluster")}); err != nil {
		return err
	}
	defer r.cluster.Stop()
	// No client-side rate limit: the TokenReview reference must measure
	// the API server, not client-go's token bucket.
	rc := rest.CopyConfig(r.cluster.RESTConfig)
	rc.QPS = -1
	if r.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if r.pki, err = bench.NewPKI(ctx, r.kube); err != nil {
		return err
	}

	started := time.Now()
	if *only == "" || *only == "ca" {
		if err := r.issuance(ctx); err != nil {
			return fmt.Errorf("CA issuance: %w", err)
		}
	}
	if *only == "" || *only == "jwt" {
		if err := r.jwt(ctx); err != nil {
			return fmt.Errorf("JWT-SVIDs: %w", err)
		}
	}
	if *only == "" || *only == "dataplane" || *only == "transparent" {
		if err := r.dataPlane(ctx, *only); err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
	}
	if *only == "" || *only == "requests" {
		if err := r.requests(ctx); err != nil {
			return fmt.Errorf("request policy: %w", err)
		}
	}
	report := r.report(*only, *out, time.Since(started))
	if *only == "transparent" || *only == "requests" || *only == "jwt" {
		old, err := os.ReadFile(*out)
		if err != nil {
			return err
		}
		section, begin, end, what := r.transparentSection(), transparentBegin, transparentEnd, "the transparent pair"
		switch *only {
		case "requests":
			section, begin, end, what = r.requestsSection(), requestsBegin, requestsEnd, "the request-policy pair"
		case "jwt":
			section, begin, end, what = r.jwtSection(), jwtBegin, jwtEnd, "the JWT-SVIDs"
		}
		if report, err = splice(string(old), section, begin, end, what); err != nil {
			return fmt.Errorf("--out %s: %w", *out, err)
		}
	}
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s", *out)
	return nil
}

// onlineCPUs counts the machine's CPUs, whatever this process's affinity.
func onlineCPUs() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "processor") {
			n++
		}
	}
	return n
}

func slicesMax(s []int) int { return slices.Max(s) }

// profile takes a CPU profile of the meshid process whose admin endpoint is
// admin for d, in the background, into --profiles/name.pprof; wait blocks
// until it is written.
func (r *runner) profile(admin, name string, d time.Duration) (wait func()) {
	if d < time.Second {
		return func() {}
	}
	return r.pprof(admin, name, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())))
}

// pprof fetches /debug/pprof/what from admin into --profiles/name.pprof in
// the background (nothing without --profiles); wait blocks until written.
func (r *runner) pprof(admin, name, what string) (wait func()) {
	if r.profiles == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s", admin, what))
		if err != nil {
			log.Printf("profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(r.profiles, name+".pprof"), b, 0o644)
		}
		if err != nil {
			log.Printf("profile %s: %v", name, err)
		}
	}()
	return func() { <-done }
}
