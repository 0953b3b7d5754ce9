package workload_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/proxy/state"
	"github.com/meshid/meshid/proxy/workload"
	"github.com/meshid/meshid/rotation"
)

// jwtCA stands in for meshid-ca's MintJWTSVID: an ES256 key, counted mints.
type jwtCA struct {
	key   *ecdsa.PrivateKey
	clock *clocktesting.FakeClock
	ttl   time.Duration

	mu       sync.Mutex
	mints    int
	refuse   error
	subjects spiffeid.ID
}

func (c *jwtCA) jwks(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: c.key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *jwtCA) sign(sub string, aud []string, iat, exp time.Time) (string, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: c.key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(s).Claims(jwt.Claims{Subject: sub, Audience: aud, IssuedAt: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(exp)}).Serialize()
}

func (c *jwtCA) mint(_ context.Context, aud []string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != nil {
		return "", c.refuse
	}
	c.mints++
	now := time.Now() // go-spiffe's client reads iat against the real clock
	return c.sign(c.subjects.String(), aud, now, now.Add(c.ttl))
}

func (c *jwtCA) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mints
}

type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(call, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[call+"/"+reason]++
}

func (r *refusals) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[key]
}

// storeFor is a store holding an SVID for id and its bundle.
func storeFor(t testing.TB, id spiffeid.ID) *state.Store {
	t.Helper()
	anchor := issuertest.Anchor(t)
	leaf := issuertest.Leaf(t, anchor, id)
	store := state.NewStore(id.TrustDomain())
	store.SetSVID(&rotation.Issued{SVID: &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf.Cert}, PrivateKey: leaf.Key}})
	b, err := bundle.New(anchor.Cert)
	if err != nil {
		t.Fatal(err)
	}
	store.SetBundle(b)
	return store
}

// jwtServer serves a Workload API with JWT-SVIDs from a fake CA, for web,
// and returns the socket's address.
func jwtServer(t testing.TB) (*jwtCA, *refusals, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Real time: go-spiffe's validation reads the real clock.
	clk := clocktesting.NewFakeClock(time.Now())
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	store := storeFor(t, id)
	ca := &jwtCA{key: key, clock: clk, ttl: 5 * time.Minute, subjects: id}
	if _, err := store.SetJWTBundle(ca.jwks(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetJWTBundle([]byte("{not json")); err == nil {
		t.Fatal("a broken JWKS was taken")
	}
	dir, err := os.MkdirTemp("", "wl-jwt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "api.sock")
	r := &refusals{n: map[string]int{}}
	s := workload.New(store, nil, nil)
	s.EnableJWT(workload.JWTConfig{Mint: ca.mint, Refused: r.add, Clock: clk})
	serve(t, s, socket)
	return ca, r, "unix://" + socket
}

// jwtClient is go-spiffe's client of the Workload API at addr, closed when
// the test ends, and a context for its calls.
func jwtClient(t testing.TB, addr string) (context.Context, *workloadapi.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return ctx, client
}

// TestFetchJWTSVID: go-spiffe's client fetches a JWT-SVID for vault and
// validates it against the bundle from FetchJWTBundles; not for another
// audience. A second fetch comes from the cache; past half its life it is
// minted again.
func TestFetchJWTSVID(t *testing.T) {
	ca, _, addr := jwtServer(t)
	ctx, client := jwtClient(t, addr)
	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault"})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != ca.subjects {
		t.Fatalf("sub %s; want %s", svid.ID, ca.subjects)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"vault"}); err != nil {
		t.Fatalf("validate for vault: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"other"}); err == nil {
		t.Fatal("validated for another audience")
	}
	if got, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "vault"); err != nil || got.ID != ca.subjects {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}

	again, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault"})
	if err != nil || again.Marshal() != svid.Marshal() || ca.count() != 1 {
		t.Fatalf("second fetch: %v, %d mints; want the cached JWT-SVID", err, ca.count())
	}
	if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault", ExtraAudiences: []string{"s3"}}); err != nil || ca.count() != 2 {
		t.Fatalf("another audience set: %v, %d mints; want a new one", err, ca.count())
	}
	ca.clock.Step(3 * time.Minute) // past half of 5 minutes
	if renewed, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault"}); err != nil || ca.count() != 3 || renewed.Marshal() == svid.Marshal() {
		t.Fatalf("past half its life: %v, %d mints; want a new JWT-SVID", err, ca.count())
	}
}

// TestFetchJWTSVIDRefusals: each bad request is refused with its code and
// counted, and the CA is not asked.
func TestFetchJWTSVIDRefusals(t *testing.T) {
	ca, r, addr := jwtServer(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := workloadpb.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name   string
		req    *workloadpb.JWTSVIDRequest
		code   codes.Code
		reason string
	}{
		{"no audience", &workloadpb.JWTSVIDRequest{}, codes.InvalidArgument, workload.ReasonAudienceMissing},
		{"wildcard", &workloadpb.JWTSVIDRequest{Audience: []string{"vault", "*"}}, codes.InvalidArgument, workload.ReasonAudienceInvalid},
		{"empty audience", &workloadpb.JWTSVIDRequest{Audience: []string{""}}, codes.InvalidArgument, workload.ReasonAudienceInvalid},
		{"another workload's sub", &workloadpb.JWTSVIDRequest{Audience: []string{"vault"}, SpiffeId: "spiffe://cluster.local/ns/shop/sa/db"}, codes.PermissionDenied, workload.ReasonSubjectMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.get(workload.CallFetchJWTSVID + "/" + tc.reason)
			_, err := api.FetchJWTSVID(ctx, tc.req)
			if got := r.get(workload.CallFetchJWTSVID + "/" + tc.reason); status.Code(err) != tc.code || got != before+1 {
				t.Fatalf("%v (counted %d times); want %s counted once as %s", err, got-before, tc.code, tc.reason)
			}
		})
	}
	if ca.count() != 0 {
		t.Fatalf("the CA was asked %d times for refused requests", ca.count())
	}
	// The CA's refusal (a TTL above its cap, say) reaches the caller.
	ca.refuse = status.Error(codes.InvalidArgument, "ttl_seconds 7200 is outside 1..3600 (the CA's cap)")
	_, err = api.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"vault"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "the CA's cap") || r.get(workload.CallFetchJWTSVID+"/"+workload.ReasonMintFailed) != 1 {
		t.Fatalf("CA refusal: %v", err)
	}
	if _, err := (&http2NoHeader{api}).fetch(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("without the security header: %v", err)
	}
}

type http2NoHeader struct {
	api workloadpb.SpiffeWorkloadAPIClient
}

func (h *http2NoHeader) fetch() (*workloadpb.JWTSVIDResponse, error) {
	return h.api.FetchJWTSVID(context.Background(), &workloadpb.JWTSVIDRequest{Audience: []string{"vault"}})
}

// TestValidateJWTSVIDAttacks: tokens an attacker makes are refused by
// ValidateJWTSVID and counted.
func TestValidateJWTSVIDAttacks(t *testing.T) {
	ca, r, addr := jwtServer(t)
	ctx, client := jwtClient(t, addr)
	now := time.Now()
	good, err := ca.sign(ca.subjects.String(), []string{"vault"}, now, now.Add(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	payload := strings.Split(good, ".")[1]
	none := enc([]byte(`{"alg":"none","kid":"k1","typ":"JWT"}`)) + "." + payload + "."
	pubDER, _ := x509.MarshalPKIXPublicKey(ca.key.Public())
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: pubDER, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	hs256, _ := jwt.Signed(hs).Claims(jwt.Claims{Subject: ca.subjects.String(), Audience: jwt.Audience{"vault"}, Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
	expired, _ := ca.sign(ca.subjects.String(), []string{"vault"}, now.Add(-time.Hour), now.Add(-time.Minute))
	// A retired key: signed well, but by a key no longer in the bundle.
	old, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	retiredCA := &jwtCA{key: old}
	retired, _ := retiredCA.sign(ca.subjects.String(), []string{"vault"}, now, now.Add(5*time.Minute))

	if _, err := client.ValidateJWTSVID(ctx, good, "vault"); err != nil {
		t.Fatalf("the good token: %v", err)
	}
	n := 0
	for name, tc := range map[string]struct{ token, aud string }{
		"alg none":              {none, "vault"},
		"HS256 with public key": {hs256, "vault"},
		"expired":               {expired, "vault"},
		"retired key":           {retired, "vault"},
		"other audience":        {good, "s3"},
		"garbage":               {"a.b.c", "vault"},
	} {
		n++
		if _, err := client.ValidateJWTSVID(ctx, tc.token, tc.aud); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want InvalidArgument", name, err)
		}
		if got := r.get(workload.CallValidateJWTSVID + "/" + workload.ReasonInvalidToken); got != n {
			t.Errorf("%s: counted %d refusals; want %d", name, got, n)
		}
	}
	if _, err := client.ValidateJWTSVID(ctx, good, "*"); status.Code(err) != codes.InvalidArgument || r.get(workload.CallValidateJWTSVID+"/"+workload.ReasonAudienceMissing) != 1 {
		t.Fatalf("audience *: %v", err)
	}
}

// BenchmarkFetchJWTSVIDCached: go-spiffe's FetchJWTSVID over the Unix
// socket, answered from the cache (the cache-hit latency a workload sees).
func BenchmarkFetchJWTSVIDCached(b *testing.B) {
	ca, _, addr := jwtServer(b)
	ctx, client := jwtClient(b, addr)
	if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault"}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault"}); err != nil {
			b.Fatal(err)
		}
	}
	if ca.count() != 1 {
		b.Fatalf("%d mints; want every fetch but the first from the cache", ca.count())
	}
}
