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

	"github.com/meshid/meshid/ca/identity"
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
	// CacheTTL is how long a positive review is reused; 0 means do not cache.
	// An entry never outlives the token's exp claim.
	CacheTTL time.Duration
	// CacheSize bounds the cached reviews; 0 means 10,000.
	CacheSize int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
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
	if cfg.Now == nil {
		cfg.Now = time.Now
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
	key := sha256.Sum256([]byte(token))
	if res, ok := r.cache.get(key, r.cfg.Now()); ok {
		return res, true, nil
	}
	v, err, _ := r.flight.Do(string(key[:]), func() (any, error) {
		res, err := r.review(ctx, token)
		if err == nil && r.cfg.CacheTTL > 0 {
			now := r.cfg.Now()
			deadline := now.Add(r.cfg.CacheTTL)
			if exp, ok := expiry(token); !ok {
				deadline = now // no exp claim we can read: do not cache
			} else if exp.Before(deadline) {
				deadline = exp
			}
			if deadline.After(now) {
				r.cache.put(key, res, deadline)
			}
		}
		return res, err
	})
	if err != nil {
		return Result{}, false, err
	}
	return v.(Result), false, nil
}

// CacheLen returns the number of cached reviews.
func (r *Reviewer) CacheLen() int { return r.cache.len() }

func (r *Reviewer) review(ctx context.Context, token string) (Result, error) {
	tr, err := r.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{r.cfg.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		detail := "the Kubernetes API server could not review the token; retry"
		if apierrors.IsForbidden(err) {
			detail = "meshid-ca may not create TokenReviews (RBAC: grant create on tokenreviews.authentication.k8s.io)"
		}
		return Result{}, &Error{Reason: Unavailable, Detail: detail + ": " + err.Error(), err: err}
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return Result{}, &Error{Reason: Rejected, Detail: fmt.Sprintf("token not accepted for audience %q: %s (is it a projected token with that audience, unexpired, for a service account and pod that still exist?)", r.cfg.Audience, msg)}
	}
	if !slices.Contains(st.Audiences, r.cfg.Audience) {
		return Result{}, &Error{Reason: AudienceDropped, Detail: fmt.Sprintf("the API server did not confirm audience %q (it answered %q); refusing the token", r.cfg.Audience, st.Audiences)}
	}
	sa, err := identity.FromUsername(st.User.Username)
	if err != nil {
		return Result{}, &Error{Reason: NotServiceAccount, Detail: fmt.Sprintf("the token belongs to %q, not a service account", st.User.Username), err: err}
	}
	id, err := sa.ID(r.cfg.TrustDomain)
	if err != nil {
		return Result{}, &Error{Reason: NotServiceAccount, Detail: err.Error(), err: err}
	}
	return Result{
		ID:             id,
		ServiceAccount: sa,
		Pod:            first(st.User.Extra[extraPodName]),
		PodUID:         first(st.User.Extra[extraPodUID]),
	}, nil
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// expiry reads the exp claim of a JWT without verifying it. It only ever
// shortens how long a review the API server already made is cached.
func expiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(*claims.Exp, 0), true
}
