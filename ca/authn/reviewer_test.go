package authn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/identity"
)

const audience = identity.DefaultAudience

// jwt returns a token-shaped string for the CA's audience whose payload has
// the given exp. Its signature is not real: only the API server checks it.
func jwt(sub string, exp time.Time) string {
	return jwtFor(sub, audience, exp)
}

func jwtFor(sub, aud string, exp time.Time) string {
	return jwtAud(sub, []string{aud}, exp)
}

func jwtAud(sub string, auds []string, exp time.Time) string {
	a, _ := json.Marshal(auds)
	payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"aud":%s,"exp":%d}`, sub, a, exp.Unix()))
	return "eyJhbGciOiJSUzI1NiJ9." + payload + ".c2ln"
}

// apiServer answers TokenReviews from a table of token -> status.
type apiServer struct {
	statuses map[string]authenticationv1.TokenReviewStatus
	calls    atomic.Int32
	fail     error
	lastAud  []string
}

func (s *apiServer) client() *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s.calls.Add(1)
		if s.fail != nil {
			return true, nil, s.fail
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		s.lastAud = tr.Spec.Audiences
		tr.Status = s.statuses[tr.Spec.Token]
		return true, tr, nil
	})
	return c
}

func ok(username string, extra map[string]authenticationv1.ExtraValue) authenticationv1.TokenReviewStatus {
	return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{audience}, User: authenticationv1.UserInfo{Username: username, Extra: extra}}
}

func newReviewer(t *testing.T, s *apiServer, ttl time.Duration, clk *clocktesting.FakePassiveClock) *authn.Reviewer {
	t.Helper()
	return newReviewerWith(t, s, authn.Config{CacheTTL: ttl}, clk)
}

// newReviewerWith fills cfg's client, trust domain, audience, cache size
// and clock.
func newReviewerWith(t *testing.T, s *apiServer, cfg authn.Config, clk *clocktesting.FakePassiveClock) *authn.Reviewer {
	t.Helper()
	cfg.Client, cfg.TrustDomain, cfg.Audience = s.client(), spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain), audience
	cfg.CacheSize, cfg.Clock = 2, clk
	r, err := authn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReview(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	web := jwt("web", now.Add(time.Hour))
	user, dropped, rejected := jwt("user", now.Add(time.Hour)), jwt("dropped", now.Add(time.Hour)), jwt("rejected", now.Add(time.Hour))
	s := &apiServer{statuses: map[string]authenticationv1.TokenReviewStatus{
		web:      ok("system:serviceaccount:a:web", map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"web-0"}}),
		user:     ok("alice", nil),
		dropped:  {Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:a:web"}},
		rejected: {Authenticated: false, Error: "invalid bearer token"},
	}}
	r := newReviewer(t, s, time.Minute, clocktesting.NewFakePassiveClock(now))

	tests := []struct {
		name     string
		token    string
		want     string
		reason   authn.Reason
		reviewed bool // the API server was asked
	}{
		{name: "service account", token: web, want: "spiffe://cluster.local/ns/a/sa/web", reviewed: true},
		{name: "user", token: user, reason: authn.NotServiceAccount, reviewed: true},
		{name: "audience not confirmed", token: dropped, reason: authn.AudienceDropped, reviewed: true},
		{name: "rejected", token: rejected, reason: authn.Rejected, reviewed: true},
		{name: "empty", token: "", reason: authn.Missing},
		{name: "huge", token: string(make([]byte, authn.MaxTokenSize+1)), reason: authn.Malformed},
		{name: "not a jwt", token: "garbage", reason: authn.Rejected},
		{name: "payload not json", token: "a.bm90IGpzb24.c", reason: authn.Rejected},
		{name: "expired", token: jwt("web", now.Add(-time.Second)), reason: authn.Rejected},
		{name: "another audience", token: jwtFor("web", "https://kubernetes.default.svc", now.Add(time.Hour)), reason: authn.Rejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := s.calls.Load()
			res, _, err := r.Review(context.Background(), tt.token)
			if reviewed := s.calls.Load() > calls; reviewed != tt.reviewed {
				t.Errorf("API server asked: %v, want %v", reviewed, tt.reviewed)
			}
			if tt.reason != "" {
				if got := authn.ReasonOf(err); got != tt.reason {
					t.Fatalf("reason %q (%v), want %q", got, err, tt.reason)
				}
				return
			}
			if err != nil || res.ID.String() != tt.want {
				t.Fatalf("Review = %v, %v; want %s", res.ID, err, tt.want)
			}
			if res.Pod != "web-0" {
				t.Errorf("pod %q, want web-0", res.Pod)
			}
		})
	}
	if len(s.lastAud) != 1 || s.lastAud[0] != audience {
		t.Fatalf("review sent audiences %q, want [%s]", s.lastAud, audience)
	}
}

// TestReviewMultiAudience: a token for the CA's audience and another is
// refused before any TokenReview, unless AllowMultiAudience; so is one the
// API server confirms for more than the CA's audience.
func TestReviewMultiAudience(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	both := jwtAud("web", []string{audience, "vault"}, now.Add(time.Hour))
	twice := jwtAud("web", []string{audience, audience}, now.Add(time.Hour))
	overConfirmed := jwt("over", now.Add(time.Hour))
	over := ok("system:serviceaccount:a:web", nil)
	over.Audiences = []string{audience, "vault"}
	s := &apiServer{statuses: map[string]authenticationv1.TokenReviewStatus{
		both: ok("system:serviceaccount:a:web", nil), twice: ok("system:serviceaccount:a:web", nil), overConfirmed: over,
	}}
	tests := []struct {
		name     string
		allow    bool
		token    string
		reason   authn.Reason // empty: accepted
		reviewed bool
	}{
		{name: "refused by default", token: both, reason: authn.MultiAudience},
		{name: "allowed by the flag", allow: true, token: both, reviewed: true},
		{name: "our audience twice is one audience", token: twice, reviewed: true},
		{name: "api server confirms more", token: overConfirmed, reason: authn.MultiAudience, reviewed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReviewerWith(t, s, authn.Config{AllowMultiAudience: tt.allow}, clocktesting.NewFakePassiveClock(now))
			calls := s.calls.Load()
			res, _, err := r.Review(context.Background(), tt.token)
			if reviewed := s.calls.Load() > calls; reviewed != tt.reviewed {
				t.Errorf("API server asked: %v, want %v", reviewed, tt.reviewed)
			}
			if got := authn.ReasonOf(err); got != tt.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tt.reason)
			}
			if tt.reason == "" && res.ID.String() != "spiffe://cluster.local/ns/a/sa/web" {
				t.Fatalf("ID %s", res.ID)
			}
			if tt.reason != "" && strings.Contains(err.Error(), "vault") {
				t.Errorf("the caller is told %q: it names the token's other audiences", err)
			}
		})
	}
}

// TestReviewRefusalsKeepTheAPIServerToItself: what the API server says
// about a refused token (it names service-account and pod UIDs) reaches the
// CA's log, never the caller.
func TestReviewRefusalsKeepTheAPIServerToItself(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const secret = "pod UID (5d0c1c9e-0c4b-4bd8-9d0e-5b1e3e5f7a11) does not match service account pod ref claim"
	rejected, user, dropped := jwt("rejected", now.Add(time.Hour)), jwt("user", now.Add(time.Hour)), jwt("dropped", now.Add(time.Hour))
	s := &apiServer{statuses: map[string]authenticationv1.TokenReviewStatus{
		rejected: {Authenticated: false, Error: "[invalid bearer token, " + secret + "]"},
		user:     ok("oidc:secret-admin@example.com", nil),
		dropped:  {Authenticated: true, Audiences: []string{"secret-audience"}, User: authenticationv1.UserInfo{Username: "system:serviceaccount:a:web"}},
	}}
	r := newReviewer(t, s, 0, clocktesting.NewFakePassiveClock(now))
	for _, tt := range []struct {
		name, token, hidden string
		reason              authn.Reason
	}{
		{"rejected", rejected, secret, authn.Rejected},
		{"not a service account", user, "secret-admin", authn.NotServiceAccount},
		{"audience dropped", dropped, "secret-audience", authn.AudienceDropped},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := r.Review(context.Background(), tt.token)
			var e *authn.Error
			if !errors.As(err, &e) || e.Reason != tt.reason {
				t.Fatalf("got %v, want reason %s", err, tt.reason)
			}
			if strings.Contains(err.Error(), tt.hidden) || strings.Contains(e.Detail, tt.hidden) {
				t.Errorf("the caller is told %q, which holds the API server's %q", err, tt.hidden)
			}
			if len(e.Detail) < 40 {
				t.Errorf("detail %q does not say what to do", e.Detail)
			}
			if !strings.Contains(e.LogValue(), tt.hidden) {
				t.Errorf("the log line %q lost the API server's %q", e.LogValue(), tt.hidden)
			}
		})
	}
}

func TestReviewCache(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	long := jwt("long", now.Add(time.Hour))
	short := jwt("short", now.Add(10*time.Second))
	s := &apiServer{statuses: map[string]authenticationv1.TokenReviewStatus{
		long:  ok("system:serviceaccount:a:long", nil),
		short: ok("system:serviceaccount:a:short", nil),
	}}
	clk := clocktesting.NewFakePassiveClock(now)
	r := newReviewer(t, s, time.Minute, clk)
	review := func(token string) bool {
		t.Helper()
		_, cached, err := r.Review(context.Background(), token)
		if err != nil {
			t.Fatal(err)
		}
		return cached
	}

	if review(long) || !review(long) {
		t.Fatal("second review of the same token was not cached")
	}
	if review(short) || !review(short) {
		t.Fatal("short token not cached")
	}
	clk.SetTime(clk.Now().Add(11 * time.Second)) // past short's exp, inside the TTL
	if _, cached, err := r.Review(context.Background(), short); err == nil || cached {
		t.Fatalf("a review was reused after the token expired (cached %v, err %v)", cached, err)
	}
	clk.SetTime(clk.Now().Add(time.Minute)) // past the TTL
	if review(long) {
		t.Fatal("a review was reused after the cache TTL")
	}
	if n := r.CacheLen(); n > 2 {
		t.Fatalf("cache holds %d entries, bound is 2", n)
	}
}

func TestReviewUnavailable(t *testing.T) {
	now := time.Now()
	s := &apiServer{fail: errors.New("connection refused")}
	r := newReviewer(t, s, time.Minute, clocktesting.NewFakePassiveClock(now))
	_, _, err := r.Review(context.Background(), jwt("x", now.Add(time.Hour)))
	if authn.ReasonOf(err) != authn.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	if s.calls.Load() != 1 {
		t.Fatalf("%d review calls; the reviewer must not retry on its own (or without the audience)", s.calls.Load())
	}
}
