package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/bench"
)

const (
	audience    = bench.Audience
	trustDomain = bench.TrustDomain
	caNS        = bench.CANamespace
)

// caProc is a running meshid-ca and a way to call it.
type caProc struct {
	*bench.Proc
	addr, admin string
}

// startCA runs meshid-ca under pin and waits until it is ready.
func (r *runner) startCA(pin bench.Pinned, name string, args ...string) (*caProc, error) {
	ca, err := bench.StartCA(bench.CAConfig{
		Bin: filepath.Join(r.bin, "meshid-ca"), Dir: r.work, Name: name, Kubeconfig: r.cluster.Kubeconfig, Pin: pin,
		Args: append(append([]string{"--fleet-report-interval", "-1s"}, r.supported("meshid-ca",
			// All the load comes from one address here; in a cluster, from a pod each.
			"--max-connections-per-caller=-1", "--max-calls-per-caller=-1", "--profiling")...), args...),
	})
	if err != nil {
		return nil, err
	}
	return &caProc{Proc: ca.Proc, addr: ca.Addr, admin: ca.Admin}, nil
}

// supported returns the flags that the binary name in --bin knows, so
// that an older build can be measured for a before-and-after comparison.
func (r *runner) supported(name string, flags ...string) []string {
	help, _ := exec.Command(filepath.Join(r.bin, name), "--help").CombinedOutput()
	var out []string
	for _, f := range flags {
		if flag, _, _ := strings.Cut(f, "="); strings.Contains(string(help), flag+" ") {
			out = append(out, f)
		} else {
			r.note("%s in --bin has no %s flag (an older build): run without it.", name, flag)
		}
	}
	return out
}

// clients opens n connections to the CA, as n proxies would.
func (r *runner) clients(ca *caProc, n int) ([]identityv1.IdentityClient, func(), error) {
	var out []identityv1.IdentityClient
	var closers []func() error
	for range n {
		conn, err := rotation.DialCA(ca.addr, r.pki.Bundle.X509Bundle(spiffeid.RequireTrustDomainFromString(trustDomain)),
			spiffeid.RequireFromString(bench.CAID()))
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, conn.Close)
		out = append(out, identityv1.NewIdentityClient(conn))
	}
	return out, func() {
		for _, c := range closers {
			_ = c()
		}
	}, nil
}

// serviceAccounts creates n service accounts in ns.
func (r *runner) serviceAccounts(ctx context.Context, ns string, n int) error {
	return bench.ServiceAccounts(ctx, r.kube, ns, n)
}

// tokens asks for a new token of each of the n service accounts of ns.
func (r *runner) tokens(ctx context.Context, ns string, n int) ([]string, error) {
	return bench.Tokens(ctx, r.kube, ns, n)
}

func workloadID(ns string, i int) string { return bench.WorkloadID(ns, i) }

// issuance measures the CA: the raw limit, meshid-ca and SPIRE server at
// each concurrency, and the restart storm.
func (r *runner) issuance(ctx context.Context) error {
	if err := r.serviceAccounts(ctx, "bench", 1); err != nil {
		return err
	}
	toks, err := r.tokens(ctx, "bench", 1)
	if err != nil {
		return err
	}
	csr, err := bench.CSR(workloadID("bench", 0))
	if err != nil {
		return err
	}

	ca, err := r.startCA(r.server, "meshid-ca")
	if err != nil {
		return err
	}
	defer ca.Stop()
	clients, closeAll, err := r.clients(ca, slicesMax(r.concurrency))
	if err != nil {
		return err
	}
	defer closeAll()
	for _, c := range r.concurrency {
		for i := range r.runs {
			// The raw limit, in a child pinned like the CA, right before each
			// run: the machine drifts, and the ratio should not.
			v, err := r.rawLimit(csr)
			if err != nil {
				return err
			}
			r.fig("ca/raw").Add(v)
			wait := func() {}
			if i == 0 && c == slicesMax(r.concurrency) {
				cpu := r.profile(ca.admin, fmt.Sprintf("meshid-ca-c%d", c), r.duration-time.Second)
				wait = func() { cpu(); r.pprof(ca.admin, fmt.Sprintf("meshid-ca-c%d-allocs", c), "allocs")() }
			}
			run := bench.Load(ctx, c, r.duration, func(ctx context.Context, w int) error {
				_, err := clients[w%len(clients)].Certify(ctx, &identityv1.CertifyRequest{Csr: csr, Token: toks[0]})
				return err
			})
			wait()
			if run.FirstErr != nil {
				return fmt.Errorf("meshid-ca at concurrency %d: %w", c, run.FirstErr)
			}
			r.record(fmt.Sprintf("ca/meshid/c%d", c), run)
			// Each run against the raw limit measured right before it: the
			// machine drifts between runs more than within one pair.
			r.fig(fmt.Sprintf("ca/meshid/c%d/share", c)).Add(100 * run.PerSec / v)
		}
		log.Printf("raw limit so far: %s certificates/s on CPU %s", r.fig("ca/raw"), r.server.CPUs)
		log.Printf("meshid-ca c=%d: %s certificates/s, %s %% of the raw limit run by run, p99 %s ms", c, r.fig(fmt.Sprintf("ca/meshid/c%d/rate", c)),
			r.fig(fmt.Sprintf("ca/meshid/c%d/share", c)), r.fig(fmt.Sprintf("ca/meshid/c%d/p99", c)))
	}
	if err := r.paced(ctx, "ca/meshid", func(ctx context.Context, w int) error {
		_, err := clients[w%len(clients)].Certify(ctx, &identityv1.CertifyRequest{Csr: csr, Token: toks[0]})
		return err
	}); err != nil {
		return err
	}
	if rss, err := ca.RSS(); err == nil {
		r.fig("ca/meshid/rss").Add(float64(rss) / (1 << 20))
	}
	ca.Stop()

	if err := r.storm(ctx); err != nil {
		return err
	}
	if r.spireBin != "" {
		return r.spire(ctx)
	}
	return nil
}

// rawLimit runs `bench raw-limit` pinned to the server CPUs.
func (r *runner) rawLimit(csr []byte) (float64, error) {
	keyPEM, err := r.pki.Issuer.KeyPEM()
	if err != nil {
		return 0, err
	}
	certFile, keyFile, csrFile := filepath.Join(r.work, "issuer.crt"), filepath.Join(r.work, "issuer.key"), filepath.Join(r.work, "raw.csr")
	for f, b := range map[string][]byte{
		certFile: r.pki.Issuer.CertPEM(), keyFile: keyPEM,
		csrFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return 0, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	out, err := r.server.Command(self, "raw-limit", "--issuer-cert", certFile, "--issuer-key", keyFile,
		"--csr", csrFile, "--duration", r.duration.String(), "--workers", fmt.Sprint(max(1, r.server.GOMAXPROCS))).Output()
	if err != nil {
		return 0, fmt.Errorf("raw-limit: %w", err)
	}
	var v float64
	_, err = fmt.Sscan(strings.TrimSpace(string(out)), &v)
	return v, err
}

// storm: a cold meshid-ca certifies 1,000 service accounts, each with a
// token it has never seen (one TokenReview each); the reference is the
// API server reviewing the same number of new tokens on its own.
func (r *runner) storm(ctx context.Context) error {
	const n, c = 1000, 64
	if err := r.serviceAccounts(ctx, "storm", n); err != nil {
		return err
	}
	csrs := make([][]byte, n)
	for i := range csrs {
		var err error
		if csrs[i], err = bench.CSR(workloadID("storm", i)); err != nil {
			return err
		}
	}
	for range r.runs {
		toks, err := r.tokens(ctx, "storm", n)
		if err != nil {
			return err
		}
		started := time.Now()
		ca, err := r.startCA(r.server, "meshid-ca-storm")
		if err != nil {
			return err
		}
		ready := time.Since(started)
		clients, closeAll, err := r.clients(ca, c)
		if err != nil {
			ca.Stop()
			return err
		}
		run := bench.Batch(ctx, n, c, func(ctx context.Context, i int) error {
			_, err := clients[i%c].Certify(ctx, &identityv1.CertifyRequest{Csr: csrs[i], Token: toks[i]})
			return err
		})
		closeAll()
		ca.Stop()
		if run.FirstErr != nil {
			return fmt.Errorf("storm: %w", run.FirstErr)
		}
		r.fig("storm/meshid/seconds").Add(run.Elapsed.Seconds())
		r.fig("storm/meshid/ready").Add(ready.Seconds())

		toks, err = r.tokens(ctx, "storm", n)
		if err != nil {
			return err
		}
		ref := bench.Batch(ctx, n, c, func(ctx context.Context, i int) error {
			tr, err := r.kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: toks[i], Audiences: []string{audience}},
			}, metav1.CreateOptions{})
			if err == nil && !tr.Status.Authenticated {
				err = fmt.Errorf("token review: not authenticated: %s", tr.Status.Error)
			}
			return err
		})
		if ref.FirstErr != nil {
			return fmt.Errorf("storm reference: %w", ref.FirstErr)
		}
		r.fig("storm/tokenreview/seconds").Add(ref.Elapsed.Seconds())
	}
	log.Printf("storm: meshid-ca %s s for %d certificates (ready in %s s); TokenReview alone %s s",
		r.fig("storm/meshid/seconds"), n, r.fig("storm/meshid/ready"), r.fig("storm/tokenreview/seconds"))
	return nil
}

// spire measures SPIRE server's MintX509SVID the same way.
func (r *runner) spire(ctx context.Context) error {
	start := func(name string) (*bench.SPIRE, error) {
		dir := filepath.Join(r.work, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return bench.StartSPIRE(ctx, filepath.Join(r.spireBin, "spire-server"), dir, r.server)
	}
	mint := func(s *bench.SPIRE, csr []byte) error {
		chain, err := s.Mint(ctx, csr, time.Hour)
		if err == nil && len(chain) == 0 {
			err = fmt.Errorf("MintX509SVID returned no certificate")
		}
		return err
	}
	s, err := start("spire")
	if err != nil {
		return err
	}
	csr, err := bench.CSR("spiffe://bench.local/ns/bench/sa/sa-0")
	if err != nil {
		return err
	}
	for _, c := range r.concurrency {
		for range r.runs {
			run := bench.Load(ctx, c, r.duration, func(context.Context, int) error { return mint(s, csr) })
			if run.FirstErr != nil {
				s.Stop()
				return fmt.Errorf("spire at concurrency %d: %w", c, run.FirstErr)
			}
			r.record(fmt.Sprintf("ca/spire/c%d", c), run)
		}
		log.Printf("spire-server c=%d: %s certificates/s, p99 %s ms", c, r.fig(fmt.Sprintf("ca/spire/c%d/rate", c)), r.fig(fmt.Sprintf("ca/spire/c%d/p99", c)))
	}
	if err := r.paced(ctx, "ca/spire", func(context.Context, int) error { return mint(s, csr) }); err != nil {
		s.Stop()
		return err
	}
	if rss, err := s.RSS(); err == nil {
		r.fig("ca/spire/rss").Add(float64(rss) / (1 << 20))
	}
	s.Stop()

	const n, c = 1000, 64
	csrs := make([][]byte, n)
	for i := range csrs {
		if csrs[i], err = bench.CSR(fmt.Sprintf("spiffe://bench.local/ns/storm/sa/sa-%d", i)); err != nil {
			return err
		}
	}
	for i := range r.runs {
		s, err := start(fmt.Sprintf("spire-storm-%d", i))
		if err != nil {
			return err
		}
		run := bench.Batch(ctx, n, c, func(_ context.Context, i int) error { return mint(s, csrs[i]) })
		s.Stop()
		if run.FirstErr != nil {
			return fmt.Errorf("spire storm: %w", run.FirstErr)
		}
		r.fig("storm/spire/seconds").Add(run.Elapsed.Seconds())
	}
	log.Printf("storm: spire-server %s s", r.fig("storm/spire/seconds"))
	return nil
}

// pacedShare is the share of its own closed-loop capacity at the highest
// concurrency that a server is offered in the open-loop runs.
const pacedShare = 0.5

// paced offers the server under prefix pacedShare of its measured capacity
// from as many clients as the highest concurrency, and records the
// latencies under prefix/paced.
func (r *runner) paced(ctx context.Context, prefix string, call func(context.Context, int) error) error {
	c := slicesMax(r.concurrency)
	rate := pacedShare * r.fig(fmt.Sprintf("%s/c%d/rate", prefix, c)).Median()
	for range r.runs {
		run := bench.Paced(ctx, c, rate, r.duration, call)
		if run.FirstErr != nil {
			return fmt.Errorf("%s paced at %.0f/s: %w", prefix, rate, run.FirstErr)
		}
		r.record(prefix+"/paced", run)
	}
	log.Printf("%s at %.0f/s offered by %d clients: p50 %s ms, p99 %s ms", prefix, rate, c, r.fig(prefix+"/paced/p50"), r.fig(prefix+"/paced/p99"))
	return nil
}

// record keeps a load's rate and latency quantiles under prefix.
func (r *runner) record(prefix string, run bench.Run) {
	r.fig(prefix + "/rate").Add(run.PerSec)
	r.fig(prefix + "/p50").Add(bench.Millis(run.Lat.Quantile(0.50)))
	r.fig(prefix + "/p99").Add(bench.Millis(run.Lat.Quantile(0.99)))
}

// rawLimitMain is `bench raw-limit`: the child that measures the limit.
func rawLimitMain(args []string) error {
	fs := newFlagSet("raw-limit")
	certFile := fs.String("issuer-cert", "", "issuer certificate PEM")
	keyFile := fs.String("issuer-key", "", "issuer key PEM")
	csrFile := fs.String("csr", "", "CSR PEM")
	d := fs.Duration("duration", 5*time.Second, "how long to sign")
	workers := fs.Int("workers", 1, "signing goroutines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	kp, err := issuer.Parse(certPEM, keyPEM)
	if err != nil {
		return err
	}
	csrPEM, err := os.ReadFile(*csrFile)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return fmt.Errorf("%s: no PEM", *csrFile)
	}
	if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		return err
	}
	v, err := bench.RawLimit(kp, block.Bytes, *workers, *d)
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}
