package ca_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/jwtkey"
)

var jwtPolicy = jwtkey.Policy{Lifetime: 24 * time.Hour, PublishLead: time.Hour, MaxTTL: 15 * time.Minute}

// newMinter is a reporter whose server mints JWT-SVIDs with one key.
func newMinter(t testing.TB) (*reporter, *jwtkey.Ring) {
	t.Helper()
	r := &reporter{fixture: newFixture(t, 48*time.Hour), log: &syncBuffer{}}
	r.load(t)
	r.metrics = ca.NewMetrics(r.store)
	ring, err := jwtkey.NewRing(jwtPolicy)
	if err != nil {
		t.Fatal(err)
	}
	keys, _, err := jwtkey.Next(nil, r.now, jwtPolicy, jwtkey.Generate)
	if err != nil {
		t.Fatal(err)
	}
	ring.Set(keys)
	r.server, err = ca.NewServer(ca.ServerConfig{
		TrustDomain: td, Authenticator: tokens{"web": "shop/web", "db": "shop/db"}, Trust: r.store,
		Metrics: r.metrics, Clock: r.clock, Log: slog.New(slog.NewTextHandler(r.log, nil)),
		JWT: ring, JWTIssuer: "https://oidc.example",
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, ring
}

func TestMintJWTSVID(t *testing.T) {
	r, ring := newMinter(t)
	resp, err := r.server.MintJWTSVID(r.as(t, "web"), &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(ring.JWKS(r.now), &set); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(resp.GetToken(), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := tok.Claims(&set, &claims); err != nil {
		t.Fatalf("does not verify against the published JWKS: %v", err)
	}
	want := "spiffe://" + td.Name() + "/ns/shop/sa/web"
	if claims.Subject != want || resp.GetSpiffeId() != want || !claims.Audience.Contains("vault") || claims.Issuer != "https://oidc.example" {
		t.Fatalf("claims %+v; want sub %s, aud vault, the issuer", claims, want)
	}
	if got := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); got != ca.DefaultJWTTTL {
		t.Fatalf("lifetime %s; want the default %s", got, ca.DefaultJWTTTL)
	}
	if counter(t, r.metrics, "meshid_ca_jwt_svids_issued_total", "") != 1 {
		t.Fatal("not counted")
	}
	// The bundle carries the JWT keys.
	b, err := r.server.GetBundle(context.Background(), &identityv1.GetBundleRequest{})
	if err != nil || len(b.GetJwtAuthorities()) == 0 {
		t.Fatalf("bundle without JWT authorities (%v)", err)
	}
}

func TestMintJWTSVIDRefusals(t *testing.T) {
	r, _ := newMinter(t)
	web := r.as(t, "web")
	db := "spiffe://" + td.Name() + "/ns/shop/sa/db"
	tests := []struct {
		name   string
		ctx    context.Context
		req    *identityv1.MintJWTSVIDRequest
		code   codes.Code
		reason string
	}{
		{"no client certificate", context.Background(), &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}}, codes.Unauthenticated, "unauthenticated"},
		{"no audience", web, &identityv1.MintJWTSVIDRequest{}, codes.InvalidArgument, "jwt_audience_missing"},
		{"wildcard audience", web, &identityv1.MintJWTSVIDRequest{Audience: []string{"vault", "*"}}, codes.InvalidArgument, "jwt_audience_invalid"},
		{"empty audience", web, &identityv1.MintJWTSVIDRequest{Audience: []string{""}}, codes.InvalidArgument, "jwt_audience_invalid"},
		{"ttl above the cap", web, &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}, TtlSeconds: 3600}, codes.InvalidArgument, "jwt_ttl_invalid"},
		{"negative ttl", web, &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}, TtlSeconds: -1}, codes.InvalidArgument, "jwt_ttl_invalid"},
		{"another workload's sub", web, &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}, SpiffeId: db}, codes.PermissionDenied, "jwt_subject_mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, r.metrics, "meshid_ca_jwt_svids_refused_total", tt.reason)
			_, err := r.server.MintJWTSVID(tt.ctx, tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("got %v; want %s", err, tt.code)
			}
			if got := counter(t, r.metrics, "meshid_ca_jwt_svids_refused_total", tt.reason); got != before+1 {
				t.Fatalf("reason %s counted %v times; want %v", tt.reason, got, before+1)
			}
		})
	}
}

func TestMintJWTSVIDNoKey(t *testing.T) {
	r, ring := newMinter(t)
	ring.Set(nil)
	_, err := r.server.MintJWTSVID(r.as(t, "web"), &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v; want UNAVAILABLE", err)
	}
}

// BenchmarkMintJWTSVID is the handler alone (no gRPC, no TLS), against
// BenchmarkSign: what MintJWTSVID adds to signing.
func BenchmarkMintJWTSVID(b *testing.B) {
	r, _ := newMinter(b)
	ctx := r.as(b, "web")
	req := &identityv1.MintJWTSVIDRequest{Audience: []string{"vault"}}
	for b.Loop() {
		if _, err := r.server.MintJWTSVID(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	now := time.Now()
	keys, _, err := jwtkey.Next(nil, now, jwtPolicy, jwtkey.Generate)
	if err != nil {
		b.Fatal(err)
	}
	id := td.ID()
	for b.Loop() {
		if _, err := jwtkey.Sign(keys[0], jwtkey.Claims{Subject: id, Audience: []string{"vault"}, IssuedAt: now, Expiry: now.Add(5 * time.Minute)}); err != nil {
			b.Fatal(err)
		}
	}
}
