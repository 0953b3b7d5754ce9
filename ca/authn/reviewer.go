package authn

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/identity"
)

// MaxTokenSize is the largest token Review sends to the API server, in bytes.
// Projected service-account tokens are about 1 KiB.
const MaxTokenSize = 16 << 10

// Extra keys the API server sets on a review of a pod-bound token.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Config configures a Reviewer.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// TrustDomain of the IDs the Reviewer returns. Required.
	TrustDomain spiffeid.TrustDomain
	// Audience every token must be issued for. Required: a review without an
	// audience would accept tokens meant for any other service.
	Audience string
	// AllowMultiAudience accepts a token whose aud claim names audiences
	// besides Audience. False refuses it (MultiAudience): whoever a token is
	// also for (a Vault, a cloud API) could replay it to the CA.
	AllowMultiAudience bool
	// CacheTTL is how long a positive review is reused; 0 means do not cache.
	// An entry never outlives the token's exp claim.
	CacheTTL time.Duration
	// CacheSize bounds the cached reviews; 0 means 10,000.
	CacheSize int
	// Clock tells the time for the cache; nil means the real clock.
	Clock clock.PassiveClock
}

// Result is a successful review.
type Result struct {
	// ID is the workload's SPIFFE ID.
	ID spiffeid.ID
	// ServiceAccount is the account the token belongs to.
	ServiceAccount identity.ServiceAccount
	// Pod is the name of the pod the token is bound to, or "".
	Pod string
	// PodUID is that pod's UID, or "".
	PodUID string
}

// Reviewer authenticates service-account tokens with TokenReview.
type Reviewer struct {
	cfg    Config
	cache  *cache
	flight singleflight.Group
}

// New returns a Reviewer, or an error if cfg is incomplete.
func New(cfg Config) (*Reviewer, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("authn: Config.Client is required")
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("authn: Config.TrustDomain is required")
	case cfg.Audience == "":
		return nil, errors.New("authn: Config.Audience is required")
	case cfg.CacheTTL < 0:
		return nil, errors.New("authn: Config.CacheTTL must not be negative")
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Reviewer{cfg: cfg, cache: newCache(cfg.CacheSize)}, nil
}

// Review authenticates token. It reports whether the answer came from the
// cache. Errors are *Error.
func (r *Reviewer) Review(ctx context.Context, token string) (Result, bool, error) {
	if token == "" {
		return Result{}, false, &Error{Reason: Missing, Detail: "no token: send the workload's projected service-account token"}
	}
	if len(token) > MaxTokenSize {
		return Result{}, false, &Error{Reason: Malformed, Detail: fmt.Sprintf("token is %d bytes, more than the %d-byte limit", len(token), MaxTokenSize)}
	}
	now := r.cfg.Clock.Now()
	// A cached review is never kept past the token's exp and was made for
	// this audience, so a hit needs no look at the claims.
	key := sha256.Sum256([]byte(token))
	if res, ok := r.cache.get(key, now); ok {
		return res, true, nil
	}
	claims, err := peek(token)
	if err != nil {
		return Result{}, false, &Error{Reason: Rejected, Detail: err.Error() + "; send a projected service-account token"}
	}
	switch {
	case claims.exp.IsZero() || !now.Before(claims.exp):
		return Result{}, false, &Error{Reason: Rejected, Detail: "token has expired (or carries no exp claim); read the projected token file again, kubelet refreshes it"}
	case !slices.Contains(claims.aud, r.cfg.Audience):
		return Result{}, false, &Error{Reason: Rejected, Detail: fmt.Sprintf("token is for audience %q, not %q; project the token with audience %q", claims.aud, r.cfg.Audience, r.cfg.Audience)}
	case !r.cfg.AllowMultiAudience && r.othersIn(claims.aud):
		return Result{}, false, r.multiAudience(claims.aud)
	}
	// The review runs detached from any one caller: callers waiting on the
	// same token share it, and one of them hanging up must not fail the rest.
	ch := r.flight.DoChan(string(key[:]), func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		res, err := r.review(rctx, token)
		if err == nil && r.cfg.CacheTTL > 0 {
			deadline := r.cfg.Clock.Now().Add(r.cfg.CacheTTL)
			if claims.exp.Before(deadline) {
				deadline = claims.exp
			}
			r.cache.put(key, res, deadline)
		}
		return res, err
	})
	select {
	case <-ctx.Done():
		return Result{}, false, &Error{Reason: Canceled, Detail: "the caller went away before the token was reviewed", err: ctx.Err()}
	case out := <-ch:
		if out.Err != nil {
			return Result{}, false, out.Err
		}
		return out.Val.(Result), false, nil
	}
}

// reviewTimeout bounds one TokenReview call.
const reviewTimeout = 10 * time.Second

// CacheLen returns the number of cached reviews.
func (r *Reviewer) CacheLen() int { return r.cache.len() }

func (r *Reviewer) review(ctx context.Context, token string) (Result, error) {
	tr, err := r.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{r.cfg.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		e := &Error{Reason: Unavailable, Detail: "the CA could not have the token reviewed by the Kubernetes API server; retry", err: err}
		if apierrors.IsForbidden(err) {
			e.Internal = "meshid-ca may not create TokenReviews (RBAC: grant create on tokenreviews.authentication.k8s.io)"
		}
		return Result{}, e
	}
	// What the API server says goes to the operator's log only: it names
	// service-account and pod UIDs, which are no business of the caller.
	st := tr.Status
	if !st.Authenticated {
		return Result{}, &Error{Reason: Rejected, Internal: "the API server said: " + orNone(st.Error),
			Detail: fmt.Sprintf("token not accepted for audience %q: is it a projected token with that audience, unexpired, for a service account and pod that still exist? Read the projected token file again", r.cfg.Audience)}
	}
	if !slices.Contains(st.Audiences, r.cfg.Audience) {
		return Result{}, &Error{Reason: AudienceDropped, Internal: fmt.Sprintf("the API server answered audiences %q", st.Audiences),
			Detail: fmt.Sprintf("the Kubernetes API server did not confirm audience %q, so the CA refuses the token; this is a fault of the API server, not the caller", r.cfg.Audience)}
	}
	// The review confirms only the audience it was asked about; the aud
	// claim read before it is what names the others. This guards an API
	// server that answers more.
	if !r.cfg.AllowMultiAudience && r.othersIn(st.Audiences) {
		return Result{}, r.multiAudience(st.Audiences)
	}
	notSA := &Error{Reason: NotServiceAccount, Internal: fmt.Sprintf("the API server authenticated it as %q", st.User.Username),
		Detail: "the token is valid but not a Kubernetes service account's; meshid issues identities to service accounts only: send the workload's projected service-account token"}
	sa, err := identity.FromUsername(st.User.Username)
	if err != nil {
		notSA.err = err
		return Result{}, notSA
	}
	id, err := sa.ID(r.cfg.TrustDomain)
	if err != nil {
		notSA.err = err
		return Result{}, notSA
	}
	return Result{
		ID:             id,
		ServiceAccount: sa,
		Pod:            first(st.User.Extra[extraPodName]),
		PodUID:         first(st.User.Extra[extraPodUID]),
	}, nil
}

// othersIn reports whether auds names an audience other than the CA's.
func (r *Reviewer) othersIn(auds []string) bool {
	return slices.ContainsFunc(auds, func(a string) bool { return a != r.cfg.Audience })
}

func (r *Reviewer) multiAudience(auds []string) *Error {
	return &Error{
		Reason:   MultiAudience,
		Detail:   fmt.Sprintf("the token is for other audiences besides %q, so each service it is for could replay it here; project a token for audience %q alone", r.cfg.Audience, r.cfg.Audience),
		Internal: fmt.Sprintf("the token's audiences are %q; --allow-multi-audience-tokens accepts such tokens", auds),
	}
}

func orNone(s string) string {
	if s == "" {
		return "(no reason given)"
	}
	return s
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// claims are the parts of a token's payload read before the review.
type claims struct {
	exp time.Time
	aud []string
}

// peek reads the exp and aud claims of a JWT without verifying it. It only
// refuses tokens early (garbage, expired, another audience, more audiences
// than the CA's) so they never cost a TokenReview, and bounds how long a
// review is cached; the API server's review stays the only proof of
// identity. A TokenReview confirms only the audiences it is asked about, so
// the aud claim is the one place that names a token's other audiences; the
// API server verifies the signature over exactly these bytes.
func peek(token string) (claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims{}, errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return claims{}, errors.New("token is not a JWT: its payload is not base64url")
	}
	var c struct {
		Exp *int64          `json:"exp"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return claims{}, errors.New("token is not a JWT: its payload is not JSON")
	}
	var out claims
	if c.Exp != nil {
		out.exp = time.Unix(*c.Exp, 0)
	}
	// aud is a string or a list of strings (RFC 7519).
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		out.aud = []string{one}
	} else if json.Unmarshal(c.Aud, &out.aud) != nil {
		return claims{}, errors.New("token has no readable aud claim")
	}
	return out, nil
}
