package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/bench"
)

// path is one way from the client to the app: direct, through the meshid
// proxy pair, or through the nginx pair.
type path struct {
	name       string
	echo, bulk string        // where the client connects
	procs      []*bench.Proc // the proxies, for RSS; none for direct
	admins     []string      // their admin addresses, for profiles (meshid only)
	// dial connects from where the client is (a pod's network namespace,
	// for the transparent pair); nil means this machine's. Such a path is
	// measured for latency and new connections only.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newConnection is bench.NewConnection from where p's client is.
func (p *path) newConnection() error {
	if p.dial == nil {
		return bench.NewConnection(p.echo)
	}
	return bench.NewConnectionVia(p.dial, p.echo)
}

const (
	latencyRate  = 1000    // requests per second in the latency runs
	bulkBytes    = 1 << 30 // bytes per bulk run
	heldConns    = 1000    // connections held open for the memory reading
	connWorkers  = 16      // concurrent new connections
	dataplaneSAs = 2       // sa-0 is web (client side), sa-1 is db (server side)
	mib          = 1 << 20 // bytes in a MiB
)

// dataPlane measures the proxies against a direct connection and nginx,
// and the transparent pair unless it cannot run here; only "transparent"
// measures latency and new connections only, on every path.
func (r *runner) dataPlane(ctx context.Context, only string) error {
	transparent, quick := true, only == "transparent"
	var caArgs []string
	if err := canRunTransparent(); err != nil {
		if quick {
			return fmt.Errorf("the transparent pair: %w", err)
		}
		r.note("the transparent pair was skipped: %v.", err)
		transparent = false
	} else {
		caArgs = append(caArgs, "--discovery")
	}
	env, err := r.newPairEnv(ctx, "dp", "meshid-ca-dataplane", caArgs...)
	if err != nil {
		return err
	}
	defer env.close()
	ca, toks, anchorsFile, direct := env.ca, env.toks, env.anchorsFile, env.app

	mesh, err := r.meshPair(ca, toks, anchorsFile, direct, "dp", "meshid", nil)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range mesh.procs {
			p.Stop()
		}
	}()
	paths := []*path{direct, mesh}
	var tlsFiles [dataplaneSAs]bench.NginxTLS
	for i := range dataplaneSAs {
		if tlsFiles[i], err = r.svidFiles(ctx, ca, toks[i], fmt.Sprintf("sa-%d", i), anchorsFile); err != nil {
			return err
		}
	}
	if r.nginx != "" {
		ng, err := r.nginxPair(tlsFiles, direct)
		if err != nil {
			return err
		}
		defer func() {
			for _, p := range ng.procs {
				p.Stop()
			}
		}()
		paths = append(paths, ng)
	} else {
		r.note("nginx was skipped (--nginx empty).")
	}
	proxied := paths[1:] // the pairs this machine's client reaches
	if transparent {
		tps, stop, err := r.transparentPaths(ctx, ca)
		if err != nil {
			return fmt.Errorf("the transparent pair: %w", err)
		}
		defer stop()
		paths = append(paths, tps...)
	}

	for _, p := range proxied {
		if quick {
			break
		}
		r.rss("idle", p)
		if err := r.held(p, "held"); err != nil {
			return err
		}
	}
	if err := r.latency(paths); err != nil {
		return err
	}
	for run := range r.runs {
		for _, p := range rotate(paths, run) {
			res := bench.Load(ctx, connWorkers, r.duration, func(context.Context, int) error { return p.newConnection() })
			if res.FirstErr != nil {
				return fmt.Errorf("new connections via %s: %w", p.name, res.FirstErr)
			}
			r.fig("conns/" + p.name).Add(res.PerSec)
		}
		v, err := r.rawTLS(tlsFiles)
		if err != nil {
			return err
		}
		r.fig("conns/raw").Add(v)
	}
	for run := range r.runs {
		for _, p := range rotate(paths, run) {
			if quick || p.dial != nil {
				continue
			}
			v, err := bench.Bulk(p.bulk, bulkBytes)
			if err != nil {
				return err
			}
			r.fig("bulk/" + p.name).Add(v)
		}
	}
	for _, p := range proxied {
		if quick {
			break
		}
		if err := r.held(p, "held-after"); err != nil {
			return err
		}
	}
	for _, p := range paths {
		log.Printf("%s: latency p50 %s p99 %s p99.9 %s ms; %s conns/s; %s MB/s", p.name,
			r.fig("lat/"+p.name+"/p50"), r.fig("lat/"+p.name+"/p99"), r.fig("lat/"+p.name+"/p999"),
			r.fig("conns/"+p.name), r.fig("bulk/"+p.name))
	}
	return nil
}

// rotate starts the order of s (paths) at a different one each run, so
// that a drift of the machine does not always favour the same path.
func rotate[T any](s []T, run int) []T {
	k := run % len(s)
	return append(append([]T{}, s[k:]...), s[:k]...)
}

// pairEnv is what a proxy pair needs: a meshid-ca, the tokens of
// dataplaneSAs service accounts, the anchors' file and the apps (the echo
// and bulk servers, on the load CPUs) as the direct path.
type pairEnv struct {
	ca          *caProc
	toks        []string
	anchorsFile string
	app         *path
	close       func()
}

// newPairEnv starts the CA caName (with caArgs) and the apps, for the
// service accounts of namespace ns.
func (r *runner) newPairEnv(ctx context.Context, ns, caName string, caArgs ...string) (_ *pairEnv, err error) {
	env := &pairEnv{}
	var stops []func()
	env.close = func() {
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}
	defer func() {
		if err != nil {
			env.close()
		}
	}()
	if env.ca, err = r.startCA(bench.Pinned{}, caName, caArgs...); err != nil {
		return nil, err
	}
	stops = append(stops, env.ca.Stop)
	if err := r.serviceAccounts(ctx, ns, dataplaneSAs); err != nil {
		return nil, err
	}
	if env.toks, err = r.tokens(ctx, ns, dataplaneSAs); err != nil {
		return nil, err
	}
	env.anchorsFile = filepath.Join(r.work, ns+"-anchors.pem")
	if err := os.WriteFile(env.anchorsFile, r.pki.Anchor.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	echoL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	echo := bench.ServeEcho(echoL)
	stops = append(stops, func() { echo.Close() })
	bulkL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { bulkL.Close() })
	bench.ServeBulk(bulkL)
	env.app = &path{name: "direct", echo: echoL.Addr().String(), bulk: bulkL.Addr().String()}
	return env, nil
}

// meshPair starts the web (outbound) and db (inbound) meshid-proxies of
// the path name, for the service accounts sa-0 and sa-1 of namespace ns.
// authz is db's authorization flags given its echo inbound's listen
// address; nil is --default-mode cluster-authenticated.
func (r *runner) meshPair(ca *caProc, toks []string, anchorsFile string, app *path, ns, name string, authz func(in string) ([]string, error)) (*path, error) {
	dbID := workloadID(ns, 1)
	in, bulkIn, out, bulkOut := bench.FreeAddr(), bench.FreeAddr(), bench.FreeAddr(), bench.FreeAddr()
	mode := []string{"--default-mode", "cluster-authenticated"}
	if authz != nil {
		var err error
		if mode, err = authz(in); err != nil {
			return nil, err
		}
	}
	db, err := r.startProxy(ca, name+"-db-proxy", toks[1], anchorsFile,
		append([]string{"--inbound", in + "=" + app.echo, "--inbound", bulkIn + "=" + app.bulk}, mode...)...)
	if err != nil {
		return nil, err
	}
	web, err := r.startProxy(ca, name+"-web-proxy", toks[0], anchorsFile,
		"--outbound", out+"="+in+",id="+dbID, "--outbound", bulkOut+"="+bulkIn+",id="+dbID)
	if err != nil {
		db.Stop()
		return nil, err
	}
	return &path{name: name, echo: out, bulk: bulkOut, procs: []*bench.Proc{web.Proc, db.Proc}, admins: []string{web.admin, db.admin}}, nil
}

// proxyProc is a running meshid-proxy.
type proxyProc struct {
	*bench.Proc
	admin string
}

func (r *runner) startProxy(ca *caProc, name, token, anchorsFile string, args ...string) (*proxyProc, error) {
	tokenFile := filepath.Join(r.work, name+".token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, err
	}
	admin := bench.FreeAddr()
	p, err := r.server.Start(r.work, name, filepath.Join(r.bin, "meshid-proxy"), append([]string{
		"--ca", ca.addr, "--ca-id", fmt.Sprintf("spiffe://%s/ns/%s/sa/meshid-ca", trustDomain, caNS),
		"--token-file", tokenFile, "--trust-bundle-file", anchorsFile, "--admin-listen", admin,
	}, append(r.supported("meshid-proxy", "--profiling"), args...)...)...)
	if err != nil {
		return nil, err
	}
	if err := bench.WaitReady(p, admin); err != nil {
		return nil, err
	}
	return &proxyProc{Proc: p, admin: admin}, nil
}

// svidFiles certifies a service account and writes its SVID for nginx and
// the raw handshake loop.
func (r *runner) svidFiles(ctx context.Context, ca *caProc, token, name, anchorsFile string) (bench.NginxTLS, error) {
	clients, closeAll, err := r.clients(ca, 1)
	if err != nil {
		return bench.NginxTLS{}, err
	}
	defer closeAll()
	issued, err := rotation.Certify(ctx, clients[0], token, time.Now())
	if err != nil {
		return bench.NginxTLS{}, err
	}
	certPEM, keyPEM, err := issued.SVID.Marshal()
	if err != nil {
		return bench.NginxTLS{}, err
	}
	t := bench.NginxTLS{
		CertFile: filepath.Join(r.work, name+".pem"), KeyFile: filepath.Join(r.work, name+".key"), AnchorsFile: anchorsFile,
	}
	if err := os.WriteFile(t.CertFile, certPEM, 0o600); err != nil {
		return t, err
	}
	return t, os.WriteFile(t.KeyFile, keyPEM, 0o600)
}

// nginxPair starts two nginx stream proxies doing the meshid pair's job.
func (r *runner) nginxPair(t [dataplaneSAs]bench.NginxTLS, app *path) (*path, error) {
	in, bulkIn, out, bulkOut := bench.FreeAddr(), bench.FreeAddr(), bench.FreeAddr(), bench.FreeAddr()
	db, err := bench.StartNginx(r.nginx, filepath.Join(r.work, "nginx-db"), r.server, []string{in, bulkIn},
		bench.NginxInbound(in, app.echo, t[1]), bench.NginxInbound(bulkIn, app.bulk, t[1]))
	if err != nil {
		return nil, err
	}
	web, err := bench.StartNginx(r.nginx, filepath.Join(r.work, "nginx-web"), r.server, []string{out, bulkOut},
		bench.NginxOutbound(out, in, t[0]), bench.NginxOutbound(bulkOut, bulkIn, t[0]))
	if err != nil {
		db.Stop()
		return nil, err
	}
	return &path{name: "nginx", echo: out, bulk: bulkOut, procs: []*bench.Proc{web, db}}, nil
}

// rss records the resident memory of each proxy of p (in MiB) under label.
func (r *runner) rss(label string, p *path) {
	for i, proc := range p.procs {
		if v, err := proc.RSS(); err == nil {
			r.fig(fmt.Sprintf("rss/%s/%s/%d", label, p.name, i)).Add(float64(v) / mib)
		}
	}
}

// Latency is measured in rounds of latencyRound, the paths taking turns
// round by round: a pause of the machine (this is a VM with neighbours)
// lasts seconds, and so falls on every path alike instead of on whichever
// path had the longer run at that moment. A run's quantiles are over all
// of its rounds' requests.
const latencyRound = time.Second

// latencyLoad is the kept-alive load on one path: one client whose
// connections last across rounds, as an app's would.
type latencyLoad struct {
	p         *path
	transport *http.Transport
	client    *http.Client
	target    vegeta.Targeter
	dials     atomic.Int64    // connections the client opened
	lat       bench.Latencies // this run's requests
	slow      int             // this run's rounds with a request over 10 ms
	gcs       []float64       // the proxies' GC cycles and allocations so far
	mallocs   []float64
	used      bench.Usage // this run's, all the path's proxies together
	peak      []int64     // the proxies' peak RSS under load
}

func newLatencyLoad(p *path) *latencyLoad {
	body := []byte(strings.Repeat("q", bench.PayloadSize))
	l := &latencyLoad{
		p:      p,
		target: vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodPost, URL: "http://" + p.echo + "/", Body: body}),
		peak:   make([]int64, len(p.procs)),
		gcs:    make([]float64, len(p.admins)), mallocs: make([]float64, len(p.admins)),
	}
	var d net.Dialer
	dial := d.DialContext
	if p.dial != nil {
		dial = p.dial
	}
	l.transport = &http.Transport{MaxIdleConnsPerHost: 1000, DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			l.dials.Add(1)
			return dial(ctx, network, addr)
		}}
	l.client = &http.Client{Transport: l.transport, Timeout: 10 * time.Second}
	return l
}

// round sends latencyRate requests/s for d and keeps their latencies.
func (l *latencyLoad) round(d time.Duration) error {
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // the proxies' RSS while the load runs
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for i, proc := range l.p.procs {
				if v, err := proc.RSS(); err == nil {
					l.peak[i] = max(l.peak[i], v)
				}
			}
		}
	}()
	defer func() { close(done); <-sampled }()
	before, err := l.usage()
	if err != nil {
		return err
	}
	defer func() {
		if after, err := l.usage(); err == nil {
			u := after.Sub(before)
			l.used.CPU += u.CPU
			l.used.Switches += u.Switches
		}
	}()
	failed, firstErr := 0, ""
	var worst time.Duration
	attacker := vegeta.NewAttacker(vegeta.Client(l.client)) // one per round: an attack ends by stopping its attacker
	for res := range attacker.Attack(l.target, vegeta.Rate{Freq: latencyRate, Per: time.Second}, d, l.p.name) {
		if res.Error != "" || res.Code != http.StatusOK {
			failed++
			if firstErr == "" {
				firstErr = fmt.Sprintf("code %d: %s", res.Code, res.Error)
			}
			continue
		}
		l.lat = append(l.lat, res.Latency)
		worst = max(worst, res.Latency)
	}
	if failed > 0 {
		return fmt.Errorf("latency via %s: %d requests failed, first: %s", l.p.name, failed, firstErr)
	}
	if worst > 10*time.Millisecond {
		l.slow++
	}
	return nil
}

// usage is the proxies' CPU time and context switches so far.
func (l *latencyLoad) usage() (bench.Usage, error) {
	var total bench.Usage
	for _, proc := range l.p.procs {
		u, err := proc.Usage()
		if err != nil {
			return total, fmt.Errorf("usage of %s's proxies: %w", l.p.name, err)
		}
		total.CPU += u.CPU
		total.Switches += u.Switches
	}
	return total, nil
}

// latency measures every path's latency in r.runs runs of interleaved
// rounds, three times r.duration of requests per path and run, and records
// the quantiles and the proxies' peak RSS.
func (r *runner) latency(paths []*path) error {
	loads := make([]*latencyLoad, len(paths))
	for i, p := range paths {
		loads[i] = newLatencyLoad(p)
		defer loads[i].transport.CloseIdleConnections()
		if err := loads[i].round(latencyRound); err != nil { // warm up: connect
			return err
		}
		loads[i].lat, loads[i].slow = nil, 0
		loads[i].dials.Store(0)
		loads[i].used = bench.Usage{}
		for j, admin := range p.admins { // GCs and allocations are counted from here
			m := scrape(admin)
			loads[i].gcs[j], loads[i].mallocs[j] = m["go_gc_duration_seconds_count"], m["go_memstats_mallocs_total"]
		}
	}
	rounds := int(3 * r.duration / latencyRound)
	for run := range r.runs {
		var waits []func()
		if run == 0 { // a CPU profile of the proxies over the first run
			for _, p := range paths {
				for i, admin := range p.admins {
					waits = append(waits, r.profile(admin, fmt.Sprintf("%s-latency-cpu-%d", p.name, i), time.Duration(rounds*len(paths))*latencyRound))
				}
			}
		}
		for round := range rounds {
			for _, l := range rotate(loads, round) {
				if err := l.round(latencyRound); err != nil {
					return err
				}
			}
		}
		for _, wait := range waits {
			wait()
		}
		for _, l := range loads {
			name, lat := l.p.name, l.lat
			var gcs []string
			for i, admin := range l.p.admins {
				m := scrape(admin)
				gcs = append(gcs, fmt.Sprintf("proxy %d: %.0f GCs, %.0f allocations", i, m["go_gc_duration_seconds_count"]-l.gcs[i], m["go_memstats_mallocs_total"]-l.mallocs[i]))
				l.gcs[i], l.mallocs[i] = m["go_gc_duration_seconds_count"], m["go_memstats_mallocs_total"]
			}
			over := 0
			for _, v := range lat {
				if v > 10*time.Millisecond {
					over++
				}
			}
			log.Printf("latency via %s, run %d: p50 %.2f p99 %.2f p99.9 %.2f max %.1f ms; %d of %d requests over 10 ms, in %d of %d rounds; %d connections opened; %s",
				name, run+1, bench.Millis(lat.Quantile(0.5)), bench.Millis(lat.Quantile(0.99)), bench.Millis(lat.Quantile(0.999)),
				bench.Millis(lat.Quantile(1)), over, len(lat), l.slow, rounds, l.dials.Swap(0), strings.Join(gcs, "; "))
			if len(l.p.procs) > 0 && len(lat) > 0 {
				cpu := float64(l.used.CPU.Microseconds()) / float64(len(lat))
				sw := float64(l.used.Switches) / float64(len(lat))
				log.Printf("%s proxies, run %d: %.1f µs of CPU and %.2f context switches per request, both proxies together", name, run+1, cpu, sw)
				r.fig("cpu/" + name).Add(cpu)
				r.fig("switches/" + name).Add(sw)
			}
			l.used = bench.Usage{}
			r.fig("lat/" + name + "/p50").Add(bench.Millis(lat.Quantile(0.50)))
			r.fig("lat/" + name + "/p99").Add(bench.Millis(lat.Quantile(0.99)))
			r.fig("lat/" + name + "/p999").Add(bench.Millis(lat.Quantile(0.999)))
			l.lat, l.slow = nil, 0
		}
	}
	for _, l := range loads {
		for i, v := range l.peak {
			r.fig(fmt.Sprintf("rss/load/%s/%d", l.p.name, i)).Add(float64(v) / mib)
		}
	}
	return nil
}

// memSeries are the Go runtime figures logged with the held connections:
// where a proxy's memory goes.
var memSeries = []string{"go_goroutines", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes",
	"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_next_gc_bytes"}

// held opens heldConns connections through p, each with one request done,
// and records the proxies' RSS while they are open, under label.
func (r *runner) held(p *path, label string) error {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range heldConns {
		c, err := bench.Hold(p.echo)
		if err != nil {
			return fmt.Errorf("hold %d connections via %s: %w", heldConns, p.name, err)
		}
		conns = append(conns, c)
	}
	r.rss(label, p)
	for i, admin := range p.admins {
		r.pprof(admin, fmt.Sprintf("%s-%s-heap-%d", p.name, label, i), "heap")()
		m := scrape(admin)
		for _, series := range memSeries {
			log.Printf("%s proxy %d with %d connections (%s): %s %.0f", p.name, i, heldConns, label, series, m[series])
		}
	}
	return nil
}

// scrape reads the unlabelled series of a proxy's /metrics (none on error).
func scrape(admin string) map[string]float64 {
	m := map[string]float64{}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseFloat(value, 64); ok && err == nil && !strings.HasPrefix(series, "#") {
			m[series] = v
		}
	}
	return m
}

// rawTLS runs `bench raw-tls` pinned to the server CPUs.
func (r *runner) rawTLS(t [dataplaneSAs]bench.NginxTLS) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	out, err := r.server.Command(self, "raw-tls", "--client-cert", t[0].CertFile, "--client-key", t[0].KeyFile,
		"--server-cert", t[1].CertFile, "--server-key", t[1].KeyFile, "--anchors", t[0].AnchorsFile,
		"--duration", r.duration.String(), "--workers", fmt.Sprint(connWorkers)).Output()
	if err != nil {
		return 0, fmt.Errorf("raw-tls: %w", err)
	}
	var v float64
	_, err = fmt.Sscan(strings.TrimSpace(string(out)), &v)
	return v, err
}

// rawTLSMain is `bench raw-tls`: the child that measures the handshake limit.
func rawTLSMain(args []string) error {
	fs := newFlagSet("raw-tls")
	clientCert := fs.String("client-cert", "", "client certificate chain PEM")
	clientKey := fs.String("client-key", "", "client key PEM")
	serverCert := fs.String("server-cert", "", "server certificate chain PEM")
	serverKey := fs.String("server-key", "", "server key PEM")
	anchorsFile := fs.String("anchors", "", "trust anchors PEM")
	d := fs.Duration("duration", 5*time.Second, "how long to connect")
	workers := fs.Int("workers", connWorkers, "client goroutines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := tls.LoadX509KeyPair(*clientCert, *clientKey)
	if err != nil {
		return err
	}
	server, err := tls.LoadX509KeyPair(*serverCert, *serverKey)
	if err != nil {
		return err
	}
	pemBytes, err := os.ReadFile(*anchorsFile)
	if err != nil {
		return err
	}
	anchors := x509.NewCertPool()
	if !anchors.AppendCertsFromPEM(pemBytes) {
		return fmt.Errorf("%s: no certificates", *anchorsFile)
	}
	v, err := bench.RawHandshakes(server, client, anchors, *workers, *d)
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}
