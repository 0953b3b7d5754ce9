package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/api/policy/crd"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/bench"
	"github.com/meshid/meshid/test/cluster"
)

// ns is the namespace of the simulated workloads.
const ns = "scale"

type sim struct {
	o       options
	work    string
	cluster *cluster.Cluster
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	pki     *bench.PKI
	anchor2 *issuer.KeyPair
	caCfgs  []bench.CAConfig
	cas     []*bench.CA
	f       *swarm
	rows    []row
	notes   []string
	stops   []func()
}

// row is one figure of the report.
type row struct{ section, what, value string }

func (s *sim) add(section, what, format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	s.rows = append(s.rows, row{section, what, v})
	log.Printf("%s: %s: %s", section, what, v)
}

func (s *sim) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	s.notes = append(s.notes, n)
	log.Print(n)
}

func (s *sim) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	for _, ca := range s.cas {
		if ca != nil {
			ca.Stop()
		}
	}
	if s.cluster != nil {
		s.cluster.Stop()
	}
}

func (s *sim) run(ctx context.Context) error {
	if err := s.controlPlane(ctx); err != nil {
		return err
	}
	if err := s.startReplicas(); err != nil {
		return err
	}
	idle, err := s.caStats(ctx, true)
	if err != nil {
		return err
	}
	if err := s.certify(ctx); err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	s.stops = append(s.stops, cancel)
	if err := s.connect(pctx); err != nil {
		return err
	}
	if err := s.perProxy(ctx, idle); err != nil {
		return err
	}
	counts := &heartbeatCounts{}
	s.f.heartbeats(pctx, s.o.heartbeat, 256, counts)
	if err := s.steady(ctx, counts); err != nil {
		return err
	}
	if err := s.bundleChange(ctx); err != nil {
		return err
	}
	return s.restart(ctx)
}

// controlPlane starts etcd and kube-apiserver and writes what the CA and
// the proxies need: the PKI, a second anchor (not yet in the bundle), the
// AuthorizationPolicy CRD, the service accounts, a pod for each.
func (s *sim) controlPlane(ctx context.Context) error {
	cpbin, err := cluster.Binaries(ctx)
	if err != nil {
		return err
	}
	log.Print("starting etcd and kube-apiserver")
	if s.cluster, err = cluster.Start(ctx, cluster.Config{BinDir: cpbin, Dir: filepath.Join(s.work, "cluster")}); err != nil {
		return err
	}
	rc := rest.CopyConfig(s.cluster.RESTConfig)
	rc.QPS = -1
	if s.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if s.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return err
	}
	if s.pki, err = bench.NewPKI(ctx, s.kube); err != nil {
		return err
	}
	if s.anchor2, err = issuer.NewAnchor(issuer.CAParams{CommonName: "scale second anchor", TTL: 48 * time.Hour}); err != nil {
		return err
	}
	if err := s.applyCRD(ctx); err != nil {
		return err
	}
	if err := bench.ServiceAccounts(ctx, s.kube, ns, s.o.serviceAccounts); err != nil {
		return err
	}
	run := bench.Batch(ctx, s.o.serviceAccounts, 16, func(ctx context.Context, i int) error {
		_, err := s.kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", i)}},
			Spec: corev1.PodSpec{
				ServiceAccountName: fmt.Sprintf("sa-%d", i), AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "app", Image: "app"}},
			},
		}, metav1.CreateOptions{})
		return err
	})
	return run.FirstErr
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func (s *sim) applyCRD(ctx context.Context) error {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crd.AuthorizationPolicy, &obj.Object); err != nil {
		return fmt.Errorf("CRD: %w", err)
	}
	if _, err := s.dyn.Resource(crdResource).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("CRD: %w", err)
	}
	established := waitUntil(ctx, 30*time.Second, func() bool {
		got, err := s.dyn.Resource(crdResource).Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
	if !established {
		return fmt.Errorf("CRD %s not established after 30s", obj.GetName())
	}
	return nil
}

// startReplicas starts the meshid-ca replicas, each with its own fleet
// ConfigMap (--replica), the default fleet report interval and per-caller
// limits.
func (s *sim) startReplicas() error {
	for r := range s.o.replicas {
		cfg := bench.CAConfig{
			Bin: filepath.Join(s.o.bin, "meshid-ca"), Dir: s.work, Name: fmt.Sprintf("meshid-ca-%d", r),
			Kubeconfig: s.cluster.Kubeconfig, Addr: bench.FreeAddr(), Admin: bench.FreeAddr(),
			Args: []string{"--replica", fmt.Sprintf("scale-%d", r), "--profiling"},
		}
		if s.o.policy {
			cfg.Args = append(cfg.Args, "--watch-policies")
		}
		cfg.Args = append(cfg.Args, s.o.caArgs...)
		ca, err := bench.StartCA(cfg)
		if err != nil {
			return err
		}
		s.caCfgs = append(s.caCfgs, cfg)
		s.cas = append(s.cas, ca)
	}
	td := spiffeid.RequireTrustDomainFromString(bench.TrustDomain)
	two, err := bundle.Parse(append(append([]byte{}, s.pki.Anchor.CertPEM()...), s.anchor2.CertPEM()...))
	if err != nil {
		return err
	}
	s.f = &swarm{anchors: s.pki.Bundle.X509Bundle(td), caID: spiffeid.RequireFromString(bench.CAID()), newSHA: two.SHA256()}
	for _, ca := range s.cas {
		s.f.addrs = append(s.f.addrs, ca.Addr)
	}
	log.Printf("%d meshid-ca replicas ready", len(s.cas))
	return nil
}

// certify issues every proxy its certificate through Certify, with the
// token of its service account, from 64 connections (each from its own
// address, spread over the replicas).
func (s *sim) certify(ctx context.Context) error {
	toks, err := bench.Tokens(ctx, s.kube, ns, s.o.serviceAccounts)
	if err != nil {
		return err
	}
	const workers = 64
	clients := make([]identityv1.IdentityClient, workers)
	for w := range workers {
		p := &proxy{home: w % len(s.cas), src: sourceIP(maxProxies - 1 - w)}
		// No client certificate yet: Certify needs none.
		p.cert = &tls.Certificate{}
		if err := s.f.connect(p); err != nil {
			return err
		}
		defer p.conn.Close()
		clients[w] = identityv1.NewIdentityClient(p.conn)
	}
	n := s.o.proxies
	s.f.proxies = make([]*proxy, n)
	anchorSHA := bundle.Fingerprint(s.pki.Anchor.Cert)
	log.Printf("certifying %d proxies", n)
	var mu sync.Mutex
	var sample *rotation.Issued
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	started := time.Now()
	run := bench.Batch(ctx, workers, workers, func(ctx context.Context, w int) error {
		for i := range next {
			sa := i % s.o.serviceAccounts
			var issued *rotation.Issued
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				if issued, err = rotation.Certify(ctx, clients[w], toks[sa], time.Now()); err == nil {
					break
				}
				if !sleep(ctx, time.Duration(attempt+1)*200*time.Millisecond) {
					return ctx.Err()
				}
			}
			if err != nil {
				return fmt.Errorf("proxy %d: %w", i, err)
			}
			leaf := issued.SVID.Certificates[0]
			iss := ""
			if len(issued.SVID.Certificates) > 1 {
				iss = bundle.Fingerprint(issued.SVID.Certificates[1])
			}
			s.f.proxies[i] = &proxy{
				i: i, home: i % len(s.cas), src: sourceIP(i), cert: issued.Certificate(), pod: fmt.Sprintf("pod-%d", sa),
				status:     newStatus(leaf.SerialNumber.Text(16), iss, anchorSHA, leaf.NotAfter, s.o.heartbeat),
				firstReady: make(chan struct{}),
			}
			if i == 0 {
				mu.Lock()
				sample = issued
				mu.Unlock()
			}
		}
		return nil
	})
	if run.FirstErr != nil {
		return fmt.Errorf("certify: %w", run.FirstErr)
	}
	took := time.Since(started)
	s.add("set-up", "certificates issued through Certify", "%d in %.1f s (%.0f/s, %d connections, %d service accounts)",
		n, took.Seconds(), float64(n)/took.Seconds(), workers, s.o.serviceAccounts)
	if sample != nil {
		log.Printf("proxy 0 is %s", sample.SVID.ID)
	}
	return nil
}

// connect opens every proxy's connection and streams, 256 at a time, and
// waits until every bundle (and policy) stream has its first message.
func (s *sim) connect(ctx context.Context) error {
	log.Printf("connecting %d proxies", len(s.f.proxies))
	started := time.Now()
	run := bench.Batch(ctx, len(s.f.proxies), 256, func(ctx context.Context, i int) error {
		p := s.f.proxies[i]
		if err := s.f.connect(p); err != nil {
			return err
		}
		s.stops = append(s.stops, func() { p.conn.Close() })
		go s.f.watchBundle(ctx, p)
		if s.o.policy {
			go s.f.watchPolicy(ctx, p)
		}
		select {
		case <-p.firstReady:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(60 * time.Second):
			return fmt.Errorf("proxy %d: no bundle 60s after connecting", i)
		}
	})
	if run.FirstErr != nil {
		return fmt.Errorf("connect: %w", run.FirstErr)
	}
	bundles := time.Since(started)
	n := len(s.f.proxies)
	s.add("set-up", "every proxy connected, its bundle stream open", "%.1f s (%.0f proxies/s)", bundles.Seconds(), float64(n)/bundles.Seconds())
	if s.o.policy {
		ok := waitUntil(ctx, 10*time.Minute, func() bool { return s.f.count(func(p *proxy) bool { return p.policyUp.Load() != 0 }) == n })
		took := time.Since(started)
		if !ok {
			s.note("only %d of %d policy streams had a policy after %s", s.f.count(func(p *proxy) bool { return p.policyUp.Load() != 0 }), n, took.Round(time.Second))
		} else {
			s.add("set-up", "every policy stream has its first policy", "%.1f s (%.0f streams/s)", took.Seconds(), float64(n)/took.Seconds())
		}
	}
	return nil
}

// replicaStats is one reading of one replica.
type replicaStats struct {
	rss        int64
	heap       float64 // heap in use right after a GC (with gc)
	stacks     float64
	goroutines float64
	watchers   float64
	cpu        time.Duration
}

// caStats reads every replica; with gc, each runs a garbage collection
// first (through pprof's heap endpoint), so its heap in use is what it
// holds live. meshid-ca runs with GOGC 400, so between collections its
// heap, and so its RSS, holds up to five times what is live.
func (s *sim) caStats(ctx context.Context, gc bool) ([]replicaStats, error) {
	out := make([]replicaStats, len(s.cas))
	for r, ca := range s.cas {
		if gc {
			if err := get(ctx, "http://"+ca.Admin+"/debug/pprof/heap?gc=1"); err != nil {
				return nil, fmt.Errorf("replica %d: GC: %w", r, err)
			}
		}
		rss, err := ca.RSS()
		if err != nil {
			return nil, err
		}
		u, err := ca.Usage()
		if err != nil {
			return nil, err
		}
		m, err := bench.Scrape(ctx, nil, "http://"+ca.Admin+"/metrics")
		if err != nil {
			return nil, err
		}
		out[r] = replicaStats{
			rss: rss, cpu: u.CPU, goroutines: m.Sum("go_goroutines", nil), watchers: m.Sum("meshid_ca_bundle_watchers", nil),
			heap: m.Sum("go_memstats_heap_inuse_bytes", nil), stacks: m.Sum("go_memstats_stack_inuse_bytes", nil),
		}
	}
	return out, nil
}

// perProxy is what a replica holds per 1,000 proxies (each one connection
// and its streams), from the difference to the idle reading.
func (s *sim) perProxy(ctx context.Context, idle []replicaStats) error {
	sleep(ctx, 5*time.Second) // let the connect burst settle
	loaded, err := s.caStats(ctx, true)
	if err != nil {
		return err
	}
	var rss, heap, stacks, gor, watchers float64
	var maxRSS int64
	for r := range loaded {
		rss += float64(loaded[r].rss - idle[r].rss)
		heap += loaded[r].heap - idle[r].heap
		stacks += loaded[r].stacks - idle[r].stacks
		gor += loaded[r].goroutines - idle[r].goroutines
		watchers += loaded[r].watchers
		maxRSS = max(maxRSS, loaded[r].rss)
	}
	n := float64(len(s.f.proxies))
	streams := "a bundle stream"
	if s.o.policy {
		streams = "a bundle and a policy stream"
	}
	s.add("CA replica", "RSS per 1,000 proxies (one connection, "+streams+" each)", "%.1f MiB (all replicas: %.0f MiB more than idle; largest replica %.0f MiB)", rss/n*1000/(1<<20), rss/(1<<20), float64(maxRSS)/(1<<20))
	s.add("CA replica", "live heap and stacks per 1,000 proxies (after a GC)", "%.1f MiB heap, %.1f MiB stacks", heap/n*1000/(1<<20), stacks/n*1000/(1<<20))
	s.add("CA replica", "goroutines per 1,000 proxies", "%.0f (bundle watchers counted by the CAs: %.0f)", gor/n*1000, watchers)
	self, _ := bench.ProcessRSS(os.Getpid())
	s.add("simulator", "RSS per simulated proxy", "%.0f KiB (%d MiB in all)", float64(self)/n/1024, self>>20)

	// A quiet window: the streams are held, no heartbeats yet.
	quiet := 15 * time.Second
	before, err := s.caStats(ctx, false)
	if err != nil {
		return err
	}
	sleep(ctx, quiet)
	after, err := s.caStats(ctx, false)
	if err != nil {
		return err
	}
	var cpu time.Duration
	for r := range after {
		cpu += after[r].cpu - before[r].cpu
	}
	s.add("CA replica", "CPU to hold the streams, no heartbeats", "%.1f ms/s per 1,000 proxies (all replicas, %s window)", float64(cpu.Milliseconds())/quiet.Seconds()/n*1000, quiet)
	return nil
}

// get fetches url and throws the answer away.
func get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return err
}
