package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/bench"
)

// jwtConcurrency is the clients minting JWT-SVIDs at once.
const jwtConcurrency = 16

// jwt measures MintJWTSVID: meshid-ca with --jwt-key-secret, jwtConcurrency
// connections that present one workload's X.509-SVID (the CA mints for the
// identity it proves), each run against the raw ES256 signing limit
// measured right before it on the same core.
func (r *runner) jwt(ctx context.Context) error {
	args := r.supported("meshid-ca", "--jwt-key-secret=meshid-jwt-keys")
	if len(args) == 0 {
		return nil
	}
	if err := r.serviceAccounts(ctx, "bench-jwt", 1); err != nil {
		return err
	}
	toks, err := r.tokens(ctx, "bench-jwt", 1)
	if err != nil {
		return err
	}
	ca, err := r.startCA(r.server, "meshid-ca-jwt", args...)
	if err != nil {
		return err
	}
	defer ca.Stop()
	plain, closePlain, err := r.clients(ca, 1)
	if err != nil {
		return err
	}
	defer closePlain()
	issued, err := rotation.Certify(ctx, plain[0], toks[0], time.Now())
	if err != nil {
		return fmt.Errorf("certify the minting workload: %w", err)
	}
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	var clients []identityv1.IdentityClient
	for range jwtConcurrency {
		conn, err := rotation.DialCA(ca.addr, r.pki.Bundle.X509Bundle(td), spiffeid.RequireFromString(bench.CAID()), rotation.WithClientCertificate(issued.Certificate()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients = append(clients, identityv1.NewIdentityClient(conn))
	}
	mint := func(ctx context.Context, w int) error {
		_, err := clients[w%len(clients)].MintJWTSVID(ctx, &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}})
		return err
	}
	// The first key is made on the first sync round, right after start.
	deadline := time.Now().Add(30 * time.Second)
	for err := mint(ctx, 0); err != nil; err = mint(ctx, 0) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("meshid-ca mints no JWT-SVID: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // the bench's own pacing, not a test
	}
	c := jwtConcurrency
	for i := range r.runs {
		raw, err := r.rawJWT()
		if err != nil {
			return err
		}
		r.fig("jwt/raw").Add(raw)
		wait := func() {}
		if i == 0 {
			wait = r.profile(ca.admin, fmt.Sprintf("meshid-ca-jwt-c%d", c), r.duration-time.Second)
		}
		run := bench.Load(ctx, c, r.duration, mint)
		wait()
		if run.FirstErr != nil {
			return fmt.Errorf("MintJWTSVID at concurrency %d: %w", c, run.FirstErr)
		}
		r.record(fmt.Sprintf("jwt/meshid/c%d", c), run)
		r.fig(fmt.Sprintf("jwt/meshid/c%d/share", c)).Add(100 * run.PerSec / raw)
	}
	log.Printf("meshid-ca c=%d: %s JWT-SVIDs/s, %s %% of the raw ES256 limit (%s/s), p99 %s ms", c, r.fig(fmt.Sprintf("jwt/meshid/c%d/rate", c)),
		r.fig(fmt.Sprintf("jwt/meshid/c%d/share", c)), r.fig("jwt/raw"), r.fig(fmt.Sprintf("jwt/meshid/c%d/p99", c)))
	return nil
}

// rawJWT runs `bench raw-jwt` pinned to the server CPUs.
func (r *runner) rawJWT() (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	out, err := r.server.Command(self, "raw-jwt", "--duration", r.duration.String(), "--workers", fmt.Sprint(max(1, r.server.GOMAXPROCS))).Output()
	if err != nil {
		return 0, fmt.Errorf("raw-jwt: %w", err)
	}
	var v float64
	_, err = fmt.Sscan(strings.TrimSpace(string(out)), &v)
	return v, err
}

// rawJWTMain is `bench raw-jwt`: the child that measures the ES256 limit.
func rawJWTMain(args []string) error {
	fs := newFlagSet("raw-jwt")
	d := fs.Duration("duration", 5*time.Second, "how long to sign")
	workers := fs.Int("workers", 1, "signing goroutines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	v, err := bench.RawJWT(*workers, *d)
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}

// jwtReport is the JWT-SVID section of the report.
// The JWT-SVID section's markers, so that --only jwt rewrites it alone.
const (
	jwtBegin = "<!-- The JWT-SVIDs: written by make bench, or alone by meshid-bench --only jwt. -->"
	jwtEnd   = "<!-- End of the JWT-SVIDs. -->"
)

// jwtSection is the JWT-SVID section between its markers; empty when the
// run did not measure it.
func (r *runner) jwtSection() string {
	if len(r.fig("jwt/raw").Runs) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("%s", jwtBegin)
	r.jwtReport(w, r.cell)
	w("%s", jwtEnd)
	return b.String()
}

func (r *runner) jwtReport(w func(string, ...any), cell func(string) string) {
	c := jwtConcurrency
	w("## JWT-SVIDs")
	w("")
	w("meshid-ca's `MintJWTSVID` over gRPC with TLS 1.3, %d connections presenting one workload's X.509-SVID, audience `vault`, default lifetime; the raw limit (measured right before every run) is `jwtkey.Sign` (go-jose ES256, the same claims) in a tight loop in a process on the same core.", c)
	w("")
	w("| | c=%d |", c)
	w("|---|---|")
	w("| raw ES256 limit (JWTs/s) | %s |", cell("jwt/raw"))
	w("| **meshid-ca** (JWT-SVIDs/s) | %s |", cell(fmt.Sprintf("jwt/meshid/c%d/rate", c)))
	w("| meshid-ca / raw limit, %% (goal ≥ 80; each run against the raw limit right before it) | %s |", cell(fmt.Sprintf("jwt/meshid/c%d/share", c)))
	w("| meshid-ca p50 (ms) | %s |", cell(fmt.Sprintf("jwt/meshid/c%d/p50", c)))
	w("| meshid-ca p99 (ms) | %s |", cell(fmt.Sprintf("jwt/meshid/c%d/p99", c)))
	w("")
}
