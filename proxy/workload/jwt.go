package workload

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/proxy/state"
)

// Calls and reasons of JWTConfig.Refused.
const (
	CallFetchJWTSVID    = "FetchJWTSVID"
	CallValidateJWTSVID = "ValidateJWTSVID"

	ReasonAudienceMissing = "audience_missing"
	ReasonAudienceInvalid = "audience_invalid"
	ReasonSubjectMismatch = "subject_mismatch"
	ReasonNoSVID          = "no_svid"
	ReasonMintFailed      = "mint_failed"
	ReasonNoJWTBundle     = "no_jwt_bundle"
	ReasonInvalidToken    = "invalid_token"
)

// DefaultJWTCacheEntries bounds the JWT-SVIDs cached, one per audience set.
const DefaultJWTCacheEntries = 1024

// mintTimeout bounds one call to the CA.
const mintTimeout = 10 * time.Second

// JWTConfig lets the server hand out JWT-SVIDs.
type JWTConfig struct {
	// Mint obtains a JWT-SVID for the proxy's own identity and audience
	// from the CA (MintJWTSVID over mTLS with the proxy's X.509-SVID); a
	// gRPC status error is passed on to the caller. Required.
	Mint func(ctx context.Context, audience []string) (string, error)
	// Refused is told every refused call, by call and reason; nil ignores.
	Refused func(call, reason string)
	// Minted is told whether each JWT-SVID handed out came from the cache;
	// nil ignores.
	Minted func(cached bool)
	// MaxEntries bounds the cache; 0 means DefaultJWTCacheEntries.
	MaxEntries int
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// jwtCache holds a JWT-SVID per audience set, for the identity it was
// minted for, until half its lifetime has passed.
type jwtCache struct {
	cfg     JWTConfig
	mu      sync.Mutex
	entries map[string]jwtEntry
	flight  singleflight.Group
}

type jwtEntry struct {
	id        spiffeid.ID
	token     string
	refreshAt time.Time
	expiry    time.Time
}

// EnableJWT serves FetchJWTSVID, FetchJWTBundles and ValidateJWTSVID;
// without it FetchJWTSVID is UNAVAILABLE, while the other two serve the
// JWT bundle the store holds. Call it before Serve.
func (s *Server) EnableJWT(c JWTConfig) {
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultJWTCacheEntries
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	s.jwt = &jwtCache{cfg: c, entries: map[string]jwtEntry{}}
}

func (s *Server) refused(call, reason string, code codes.Code, format string, args ...any) error {
	if s.jwt != nil && s.jwt.cfg.Refused != nil {
		s.jwt.cfg.Refused(call, reason)
	}
	s.log.Warn("workload API call refused", "call", call, "reason", reason)
	return status.Errorf(code, format, args...)
}

// FetchJWTSVID implements the Workload API: a JWT-SVID of the proxy's
// identity for the audiences asked, from the cache while it is in the
// first half of its life, else from the CA.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if s.jwt == nil {
		return nil, status.Error(codes.Unavailable, "workload: this proxy serves no JWT-SVIDs")
	}
	aud := req.GetAudience()
	if len(aud) == 0 {
		return nil, s.refused(CallFetchJWTSVID, ReasonAudienceMissing, codes.InvalidArgument, "workload: name at least one audience: the service the JWT-SVID is for (e.g. vault)")
	}
	for _, a := range aud {
		if a == "" || a == "*" {
			return nil, s.refused(CallFetchJWTSVID, ReasonAudienceInvalid, codes.InvalidArgument, "workload: audience %q is refused: a JWT-SVID names the services it is for, none empty and no wildcard", a)
		}
	}
	snap := s.store.Load()
	if snap.SVID == nil {
		return nil, s.refused(CallFetchJWTSVID, ReasonNoSVID, codes.Unavailable, "workload: the proxy has no identity yet; retry shortly")
	}
	id := snap.SVID.ID
	if want := req.GetSpiffeId(); want != "" && want != id.String() {
		return nil, s.refused(CallFetchJWTSVID, ReasonSubjectMismatch, codes.PermissionDenied, "workload: spiffe_id %q is not this workload's identity %s; leave it empty or name your own", want, id)
	}
	token, err := s.jwt.get(ctx, id, aud)
	if err != nil {
		code := status.Code(err)
		if code == codes.Unknown {
			code = codes.Unavailable
		}
		return nil, s.refused(CallFetchJWTSVID, ReasonMintFailed, code, "workload: the CA did not mint a JWT-SVID: %s", status.Convert(err).Message())
	}
	return &workloadpb.JWTSVIDResponse{Svids: []*workloadpb.JWTSVID{{SpiffeId: id.String(), Svid: token}}}, nil
}

// get is the cached JWT-SVID of id for aud, or a new one.
func (c *jwtCache) get(ctx context.Context, id spiffeid.ID, aud []string) (string, error) {
	set := slices.Clone(aud)
	slices.Sort(set)
	set = slices.Compact(set)
	key := strings.Join(set, "\n")
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && e.id == id && now.Before(e.refreshAt) {
		if c.cfg.Minted != nil {
			c.cfg.Minted(true)
		}
		return e.token, nil
	}
	v, err, _ := c.flight.Do(id.String()+"\n"+key, func() (any, error) {
		// The first caller's cancellation must not fail the others.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mintTimeout)
		defer cancel()
		token, err := c.cfg.Mint(mctx, aud)
		if err != nil {
			return nil, err
		}
		// Read, not validated: the caller validates, and a CA clock a
		// little ahead of ours must not fail the fetch.
		tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
		var claims jwt.Claims
		if err == nil {
			err = tok.UnsafeClaimsWithoutVerification(&claims)
		}
		if err != nil || claims.Subject != id.String() || claims.Expiry == nil || !claims.Audience.Contains(aud[0]) {
			return nil, status.Errorf(codes.Internal, "the CA's JWT-SVID is not for %s and %v (%v)", id, aud, err)
		}
		minted, exp := c.cfg.Clock.Now(), claims.Expiry.Time()
		c.put(key, jwtEntry{id: id, token: token, expiry: exp, refreshAt: minted.Add(exp.Sub(minted) / 2)}, minted)
		return token, nil
	})
	if err != nil {
		return "", err
	}
	if c.cfg.Minted != nil {
		c.cfg.Minted(false)
	}
	return v.(string), nil
}

// put stores e, making room first: expired entries go, then any one.
func (c *jwtCache) put(key string, e jwtEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.cfg.MaxEntries {
		for k, old := range c.entries {
			if !now.Before(old.expiry) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.cfg.MaxEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// FetchJWTBundles implements the Workload API: the trust domain's JWT
// bundle, again at every change.
func (s *Server) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	var last *state.Snapshot
	var sent []byte
	for {
		changed := s.store.Changed()
		snap := s.store.Load()
		if snap != last && snap.JWTBundle != nil {
			last = snap
			jwks, err := snap.JWTBundle.Marshal()
			if err != nil {
				return status.Errorf(codes.Internal, "workload: encode the JWT bundle: %v", err)
			}
			if string(jwks) != string(sent) {
				if err := stream.Send(&workloadpb.JWTBundlesResponse{Bundles: map[string][]byte{s.store.TrustDomain().IDString(): jwks}}); err != nil {
					return err
				}
				sent = jwks
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// ValidateJWTSVID implements the Workload API: the token is checked with
// go-spiffe's jwtsvid.ParseAndValidate against the JWT bundle in force
// (signature by a published key, ES256/RS256 only, expiry, audience).
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if req.GetAudience() == "" || req.GetAudience() == "*" {
		return nil, s.refused(CallValidateJWTSVID, ReasonAudienceMissing, codes.InvalidArgument, "workload: name the audience the JWT-SVID must be for (your own service's name), not empty or *")
	}
	b := s.store.Load().JWTBundle
	if b == nil {
		return nil, s.refused(CallValidateJWTSVID, ReasonNoJWTBundle, codes.Unavailable, "workload: the proxy holds no JWT bundle yet (the CA mints no JWT-SVIDs, or has not answered); retry shortly")
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), b, []string{req.GetAudience()})
	if err != nil {
		return nil, s.refused(CallValidateJWTSVID, ReasonInvalidToken, codes.InvalidArgument, "workload: the JWT-SVID is not valid for audience %q: %v", req.GetAudience(), err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "workload: the JWT-SVID's claims: %v", err)
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
