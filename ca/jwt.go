package ca

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/jwtkey"
)

// DefaultJWTTTL is a JWT-SVID's lifetime when the caller names none.
const DefaultJWTTTL = 5 * time.Minute

// Refusal reasons of MintJWTSVID (label reason of
// meshid_ca_jwt_svids_refused_total).
var jwtReasons = []string{
	reasonUnauthenticated, reasonNoBundle, "reserved_identity", "jwt_subject_mismatch",
	"jwt_audience_missing", "jwt_audience_invalid", "jwt_ttl_invalid", "no_jwt_key", "sign_failed",
}

// MintJWTSVID implements identityv1.IdentityServer.
func (s *Server) MintJWTSVID(ctx context.Context, req *identityv1.MintJWTSVIDRequest) (*identityv1.JWTSVID, error) {
	if s.cfg.JWT == nil {
		return nil, status.Error(codes.Unimplemented, "this CA does not mint JWT-SVIDs")
	}
	resp, r := s.mintJWT(ctx, req)
	if r != nil {
		s.cfg.Metrics.jwtRefused.WithLabelValues(r.reason).Inc()
		msg := r.status.Message()
		if r.cause != nil {
			msg += ": " + r.cause.Error()
		}
		s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "jwt-svid refused", slog.String("reason", r.reason), slog.String("code", r.status.Code().String()), slog.String("error", msg))
		return nil, r
	}
	s.cfg.Metrics.jwtIssued.Inc()
	return resp, nil
}

// mintJWT: the caller's identity from its certificate, the request checked
// against it and the caps, signed with the key active now.
func (s *Server) mintJWT(ctx context.Context, req *identityv1.MintJWTSVIDRequest) (*identityv1.JWTSVID, *refusal) {
	id, err := s.peerID(ctx)
	if err != nil {
		reason := reasonUnauthenticated
		if status.Code(err) == codes.Unavailable {
			reason = reasonNoBundle
		}
		return nil, &refusal{reason: reason, status: status.Convert(err)}
	}
	if slices.Contains(s.cfg.Reserved, id) {
		return nil, refuse("reserved_identity", codes.PermissionDenied, nil, "%s is reserved (meshid's own, or named by the operator): no JWT-SVID is minted for it", id)
	}
	if want := req.GetSpiffeId(); want != "" && want != id.String() {
		return nil, refuse("jwt_subject_mismatch", codes.PermissionDenied, nil, "spiffe_id %q is not the caller's identity %s: a workload gets JWT-SVIDs for itself only; leave spiffe_id empty or name your own", want, id)
	}
	aud := req.GetAudience()
	if len(aud) == 0 {
		return nil, refuse("jwt_audience_missing", codes.InvalidArgument, nil, "name at least one audience: the service the JWT-SVID is for (e.g. vault)")
	}
	for _, a := range aud {
		if a == "" || a == "*" {
			return nil, refuse("jwt_audience_invalid", codes.InvalidArgument, nil, "audience %q is refused: a JWT-SVID names the services it is for, none empty and no wildcard", a)
		}
	}
	ttl := DefaultJWTTTL
	if sec := req.GetTtlSeconds(); sec != 0 {
		maxTTL := s.cfg.JWT.Policy().MaxTTL
		if sec < 0 || sec > int64(maxTTL/time.Second) {
			return nil, refuse("jwt_ttl_invalid", codes.InvalidArgument, nil, "ttl_seconds %d is outside 1..%d (the CA's cap); ask for less, or 0 for the default", sec, int64(maxTTL/time.Second))
		}
		ttl = time.Duration(sec) * time.Second
	}
	ttl = min(ttl, s.cfg.JWT.Policy().MaxTTL)
	now := s.cfg.Clock.Now()
	key, ok := s.cfg.JWT.Active(now)
	if !ok {
		return nil, refuse("no_jwt_key", codes.Unavailable, nil, "the CA has no JWT signing key in force yet; retry shortly")
	}
	return s.signJWT(key, id, aud, now, ttl)
}

func (s *Server) signJWT(key jwtkey.Key, id spiffeid.ID, aud []string, now time.Time, ttl time.Duration) (*identityv1.JWTSVID, *refusal) {
	exp := now.Add(ttl)
	tok, err := jwtkey.Sign(key, jwtkey.Claims{Subject: id, Audience: aud, Issuer: s.cfg.JWTIssuer, IssuedAt: now, Expiry: exp})
	if err != nil {
		return nil, refuse("sign_failed", codes.Internal, err, "the CA could not sign the JWT-SVID; retry, and if it persists the operator finds the cause in the CA's log")
	}
	return &identityv1.JWTSVID{Token: tok, SpiffeId: id.String(), IssuedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(exp)}, nil
}
