package ca_test

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/fleet"
)

var (
	shaOld = strings.Repeat("0a", 32)
	shaNew = strings.Repeat("1b", 32)
)

const (
	webID = "spiffe://cluster.local/ns/shop/sa/web"
	dbID  = "spiffe://cluster.local/ns/shop/sa/db"
)

// syncBuffer is a log sink the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reporter is a Server whose callers hold SVIDs of shop/web and shop/db.
type reporter struct {
	*fixture
	metrics *ca.Metrics
	log     *syncBuffer
}

// newReporter starts a server with reg as its fleet (nil: the default).
func newReporter(t testing.TB, reg *fleet.Registry) *reporter {
	t.Helper()
	r := &reporter{fixture: newFixture(t, 48*time.Hour), log: &syncBuffer{}}
	r.load(t)
	r.metrics = ca.NewMetrics(r.store)
	var err error
	r.server, err = ca.NewServer(ca.ServerConfig{
		TrustDomain: td, Authenticator: tokens{"web": "shop/web", "db": "shop/db"}, Trust: r.store,
		Metrics: r.metrics, Clock: r.clock, Log: slog.New(slog.NewTextHandler(r.log, nil)),
		Fleet: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// as returns a context in which the caller presents an SVID for token's
// identity, as after a TLS handshake with a client certificate.
func (r *reporter) as(t testing.TB, token string) context.Context {
	t.Helper()
	resp, err := r.server.Certify(context.Background(), &identityv1.CertifyRequest{Csr: csr(t), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return holding(t, resp)
}

// counter reads a counter of m, 0 when it has no such series.
func counter(t *testing.T, m *ca.Metrics, name, reason string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			match := reason == ""
			for _, l := range s.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if match {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func status0(inst, bundle string) *identityv1.ProxyStatus {
	return &identityv1.ProxyStatus{
		Instance: inst, BundleSha256: bundle, LeafSerial: "9c41a0e1f5d2b3a4c5d6e7f8091a2b3c",
		LeafIssuerSha256: shaOld, LeafAnchorSha256: shaOld, LeafNotAfter: timestamppb.New(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)),
		HeartbeatSeconds: 10,
	}
}

// TestReportStatusKeysByCaller: web, with its own valid SVID, reports db's
// instance with a converged bundle. db's own report stays in the fleet
// beside web's, and the CA counts and logs the conflict.
func TestReportStatusKeysByCaller(t *testing.T) {
	r := newReporter(t, nil)
	const inst = "0123456789abcdef"
	if _, err := r.server.ReportStatus(r.as(t, "db"), status0(inst, shaOld)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.server.ReportStatus(r.as(t, "web"), status0(inst, shaNew)); err != nil {
		t.Fatal(err)
	}
	live := r.server.Fleet().Live()
	got := map[string]string{}
	for _, p := range live {
		got[p.ID+" "+p.Instance] = p.BundleSHA256
	}
	if len(live) != 2 || got[dbID+" "+inst] != shaOld || got[webID+" "+inst] != shaNew {
		t.Fatalf("fleet %+v, want db's own report and web's beside it", live)
	}
	if v := counter(t, r.metrics, "meshid_ca_fleet_instance_conflicts_total", ""); v != 1 {
		t.Errorf("meshid_ca_fleet_instance_conflicts_total = %v, want 1", v)
	}
	if log := r.log.String(); !strings.Contains(log, "level=WARN msg=\"two identities report the same proxy instance") || !strings.Contains(log, webID) || !strings.Contains(log, dbID) {
		t.Errorf("no warning naming both identities:\n%s", log)
	}
}

// TestReportStatusRefusals: every bad report is refused with its code and
// a message, counted by reason, and changes nothing in the fleet.
func TestReportStatusRefusals(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	r := newReporter(t, fleet.NewRegistry(fleet.Config{Clock: clocktesting.NewFakePassiveClock(now), MaxPerIdentity: 2, MaxInstances: 3}))
	web, db := r.as(t, "web"), r.as(t, "db")
	for _, inst := range []string{"w1", "w2"} {
		if _, err := r.server.ReportStatus(web, status0(inst, shaOld)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.server.ReportStatus(db, status0("d1", shaOld)); err != nil {
		t.Fatal(err)
	}
	noCert := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}, AuthInfo: credentials.TLSInfo{}})
	big := strings.Repeat("a", 60<<10)
	with := func(change func(*identityv1.ProxyStatus)) *identityv1.ProxyStatus {
		st := status0("w1", shaNew)
		change(st)
		return st
	}
	tests := []struct {
		name   string
		ctx    context.Context
		req    *identityv1.ProxyStatus
		code   codes.Code
		reason string
	}{
		{name: "no client certificate", ctx: noCert, req: status0("w1", shaNew), code: codes.Unauthenticated, reason: "unauthenticated"},
		{name: "bundle of 60 KiB", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.BundleSha256 = big }), code: codes.InvalidArgument, reason: "sha256_invalid"},
		{name: "anchor not hex", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.LeafAnchorSha256 = strings.Repeat("x", 64) }), code: codes.InvalidArgument, reason: "sha256_invalid"},
		{name: "instance of 60 KiB", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.Instance = big }), code: codes.InvalidArgument, reason: "instance_invalid"},
		{name: "instance with a slash", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.Instance = "../d1" }), code: codes.InvalidArgument, reason: "instance_invalid"},
		{name: "serial of 60 KiB", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.LeafSerial = big }), code: codes.InvalidArgument, reason: "serial_invalid"},
		{name: "heartbeat that overflows", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.HeartbeatSeconds = math.MaxInt64 / 100_000_000 }), code: codes.InvalidArgument, reason: "heartbeat_invalid"},
		{name: "negative heartbeat", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.HeartbeatSeconds = math.MinInt64 }), code: codes.InvalidArgument, reason: "heartbeat_invalid"},
		{name: "not after past year 9999", ctx: web, req: with(func(s *identityv1.ProxyStatus) { s.LeafNotAfter = &timestamppb.Timestamp{Seconds: math.MaxInt64} }), code: codes.InvalidArgument, reason: "not_after_invalid"},
		{name: "a third instance of web", ctx: web, req: status0("w3", shaNew), code: codes.ResourceExhausted, reason: "identity_full"},
		{name: "a fourth instance on the replica", ctx: db, req: status0("d2", shaNew), code: codes.ResourceExhausted, reason: "replica_full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, r.metrics, "meshid_ca_fleet_reports_refused_total", tt.reason)
			_, err := r.server.ReportStatus(tt.ctx, tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("code %s (%v), want %s", status.Code(err), err, tt.code)
			}
			if msg := status.Convert(err).Message(); len(msg) < 20 || len(msg) > 400 {
				t.Errorf("message %q does not say what was wrong in a few words", msg)
			}
			if after := counter(t, r.metrics, "meshid_ca_fleet_reports_refused_total", tt.reason); after != before+1 {
				t.Errorf("refused_total{reason=%q} went from %v to %v, want +1", tt.reason, before, after)
			}
			for _, p := range r.server.Fleet().Live() {
				if !p.OverCap && (p.BundleSHA256 != shaOld || len(p.Instance) > 2) {
					t.Errorf("the refused report changed the fleet: %+v", p)
				}
			}
		})
	}
	// The live instances keep reporting.
	if _, err := r.server.ReportStatus(web, status0("w1", shaNew)); err != nil {
		t.Fatalf("web's live instance, over its cap: %v", err)
	}
}

// TestRequestTooLarge: a request over ca.MaxMessageSize is refused by gRPC
// before any handler, and still counted, for Certify and ReportStatus; a
// RESOURCE_EXHAUSTED an interceptor returns (as the caller limits do) is
// not counted as one.
func TestRequestTooLarge(t *testing.T) {
	r := newReporter(t, nil)
	limited := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if req, ok := req.(*identityv1.CertifyRequest); ok && req.GetToken() == "limited" {
			return nil, status.Error(codes.ResourceExhausted, "too many calls")
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(ca.MaxMessageSize), grpc.StatsHandler(ca.NewTooLarge(r.metrics, slog.New(slog.NewTextHandler(r.log, nil)))),
		grpc.ChainUnaryInterceptor(limited))
	identityv1.RegisterIdentityServer(srv, r.server)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := identityv1.NewIdentityClient(conn)
	ctx := context.Background()
	big := strings.Repeat("a", ca.MaxMessageSize)

	certifyTooLarge := func() float64 {
		return counter(t, r.metrics, "meshid_ca_certificates_refused_total", "request_too_large")
	}
	_, err = client.Certify(ctx, &identityv1.CertifyRequest{Csr: csr(t), Token: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Certify of %d bytes: %v, want RESOURCE_EXHAUSTED", ca.MaxMessageSize, err)
	}
	if v := certifyTooLarge(); v != 1 {
		t.Errorf("certificates_refused_total{request_too_large} = %v, want 1", v)
	}
	_, err = client.ReportStatus(ctx, status0(big, shaOld))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("ReportStatus of %d bytes: %v, want RESOURCE_EXHAUSTED", ca.MaxMessageSize, err)
	}
	if v := counter(t, r.metrics, "meshid_ca_fleet_reports_refused_total", "request_too_large"); v != 1 {
		t.Errorf("fleet_reports_refused_total{request_too_large} = %v, want 1", v)
	}

	// Not too large: refused by the handler or an interceptor.
	if _, err := client.Certify(ctx, &identityv1.CertifyRequest{Csr: csr(t), Token: "garbage"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("garbage token: %v", err)
	}
	if _, err := client.Certify(ctx, &identityv1.CertifyRequest{Csr: csr(t), Token: "limited"}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("limited: %v", err)
	}
	if v := certifyTooLarge(); v != 1 {
		t.Errorf("certificates_refused_total{request_too_large} = %v after refusals of small requests, want still 1", v)
	}
	if log := r.log.String(); !strings.Contains(log, "reason=request_too_large") || !strings.Contains(log, "larger than max") {
		t.Errorf("the refusal is not logged with gRPC's sizes:\n%s", log)
	}
}

// TestReportStatusVerifiedOnce: a chain verified for one report is not
// taken on trust for the next once it has expired.
func TestReportStatusVerifiedOnce(t *testing.T) {
	r := newReporter(t, nil)
	ctx := r.as(t, "web")
	for range 2 {
		if _, err := r.server.ReportStatus(ctx, status0("0123456789abcdef", shaOld)); err != nil {
			t.Fatal(err)
		}
	}
	r.clock.SetTime(r.now.Add(ca.DefaultLeafTTL + time.Minute))
	if _, err := r.server.ReportStatus(ctx, status0("0123456789abcdef", shaOld)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a report with an expired certificate = %v, want Unauthenticated", err)
	}
}

// BenchmarkReportStatus: one proxy's heartbeats on one connection.
func BenchmarkReportStatus(b *testing.B) {
	r := newReporter(b, nil)
	ctx := r.as(b, "web")
	req := status0("0123456789abcdef", shaOld)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.server.ReportStatus(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
