package ca

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/ca/csr"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/jwtkey"
	"github.com/meshid/meshid/ca/policies"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/policy"
)

// Defaults for ServerConfig.
const (
	DefaultLeafTTL  = 24 * time.Hour
	DefaultBackdate = 5 * time.Minute
)

// Authenticator proves who holds a token; *authn.Reviewer is one.
type Authenticator interface {
	// Review returns the token's identity and whether the answer was cached.
	// Errors are *authn.Error.
	Review(ctx context.Context, token string) (authn.Result, bool, error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// TrustDomain names the bundle the server publishes. Required.
	TrustDomain spiffeid.TrustDomain
	// Authenticator reviews tokens. Required.
	Authenticator Authenticator
	// Trust holds the issuer and bundle. Required.
	Trust *trust.Store
	// Metrics records requests; nil means a new, unexported set.
	Metrics *Metrics
	// LeafTTL is the lifetime of a leaf; 0 means DefaultLeafTTL. Leaves
	// never outlive the issuer.
	LeafTTL time.Duration
	// Backdate is how far before now a leaf's NotBefore is set, so peers
	// with slow clocks accept it; 0 means DefaultBackdate.
	Backdate time.Duration
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// Jitter returns a random number in [0, 1) that spreads renew_after;
	// nil means math/rand/v2.
	Jitter func() float64
	// Log receives the audit line of every issued certificate and refusals;
	// nil discards.
	Log *slog.Logger
	// Reserved are identities Certify never issues, such as the CA's own:
	// its holder would receive every workload's token.
	Reserved []spiffeid.ID
	// Fleet receives proxies' status reports; nil means a new registry
	// with the default caps.
	Fleet *fleet.Registry
	// Policies serves WatchPolicy; nil means WatchPolicy is UNIMPLEMENTED.
	Policies *policies.Watcher
	// Pods reads a pod, for WatchPolicy; required with Policies.
	Pods func(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// JWT holds the JWT-SVID signing keys; nil means MintJWTSVID is
	// UNIMPLEMENTED and the bundle carries no JWT keys. Its MaxTTL caps a
	// JWT-SVID's lifetime.
	JWT *jwtkey.Ring
	// JWTIssuer is the "iss" of every JWT-SVID (the OIDC issuer URL);
	// empty leaves it out.
	JWTIssuer string
	// External serves JoinExternal and RenewExternal (external.go); nil
	// means they are UNIMPLEMENTED.
	External ExternalStore
	// ExternalLeafTTL is the lifetime of an external workload's leaf; 0
	// means DefaultExternalLeafTTL.
	ExternalLeafTTL time.Duration
	// Federated holds the foreign bundles the bundle messages carry; nil
	// means none.
	Federated *Federated
}

// Server implements the Identity gRPC service.
type Server struct {
	identityv1.UnimplementedIdentityServer
	cfg ServerConfig
	// peers are the client chains peerID has verified.
	peers verifiedPeers

	closeOnce sync.Once
	closed    chan struct{}
}

// NewServer returns a Server, or an error if cfg is incomplete.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("ca: ServerConfig.TrustDomain is required")
	case cfg.Authenticator == nil:
		return nil, errors.New("ca: ServerConfig.Authenticator is required")
	case cfg.Trust == nil:
		return nil, errors.New("ca: ServerConfig.Trust is required")
	case cfg.LeafTTL < 0 || cfg.Backdate < 0 || cfg.ExternalLeafTTL < 0:
		return nil, errors.New("ca: LeafTTL, ExternalLeafTTL and Backdate must not be negative")
	}
	if cfg.ExternalLeafTTL == 0 {
		cfg.ExternalLeafTTL = DefaultExternalLeafTTL
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(cfg.Trust)
	}
	if cfg.LeafTTL == 0 {
		cfg.LeafTTL = DefaultLeafTTL
	}
	if cfg.Backdate == 0 {
		cfg.Backdate = DefaultBackdate
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Fleet == nil {
		cfg.Fleet = fleet.NewRegistry(fleet.Config{Clock: cfg.Clock})
	}
	return &Server{cfg: cfg, closed: make(chan struct{})}, nil
}

// Close ends every WatchBundle stream, so a graceful stop does not wait for
// clients to hang up. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// Certify implements identityv1.IdentityServer.
func (s *Server) Certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	start := s.cfg.Clock.Now()
	defer func() { s.cfg.Metrics.latency.Observe(s.cfg.Clock.Since(start).Seconds()) }()

	resp, r := s.certify(ctx, req)
	if r != nil {
		s.cfg.Metrics.refused.WithLabelValues(r.reason).Inc()
		// The log gets what the caller is not told: the API server's
		// answer, the signer's error.
		msg := r.status.Message()
		var ae *authn.Error
		switch {
		case errors.As(r, &ae):
			msg = ae.LogValue()
		case r.cause != nil:
			msg += ": " + r.cause.Error()
		}
		s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "certify refused", slog.String("reason", r.reason), slog.String("code", r.status.Code().String()), slog.String("error", msg))
		return nil, r
	}
	s.cfg.Metrics.issued.Inc()
	return resp, nil
}

// certify does the work of Certify, one step after the other: authenticate
// the caller, check its request, sign, audit, answer.
func (s *Server) certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, *refusal) {
	// A request too large to check is refused before its token costs a
	// TokenReview.
	if r := checkSize(req.GetCsr()); r != nil {
		return nil, r
	}
	who, r := s.authenticate(ctx, req.GetToken())
	if r != nil {
		return nil, r
	}
	pub, r := check(req.GetCsr(), who.ID)
	if r != nil {
		return nil, r
	}
	now := s.cfg.Clock.Now()
	out, r := s.sign(ctx, who.ID, pub, now)
	if r != nil {
		return nil, r
	}
	renew := issuer.RenewAt(now, out.NotAfter, s.cfg.Jitter())
	s.audit(ctx, who, out, renew)
	return answer(who.ID, out, now, renew), nil
}

// checkSize refuses a CSR larger than csr.Check would parse.
func checkSize(der []byte) *refusal {
	if n := len(der); n > csr.MaxSize {
		return refuse(string(csr.Malformed), codes.InvalidArgument, nil, "csr is %d bytes, more than the %d-byte limit", n, csr.MaxSize)
	}
	return nil
}

// authenticate reviews the caller's token and returns the identity it
// proves, unless meshid reserves that identity for itself.
func (s *Server) authenticate(ctx context.Context, token string) (authn.Result, *refusal) {
	who, cached, err := s.cfg.Authenticator.Review(ctx, token)
	if err != nil {
		reason := authn.ReasonOf(err)
		if reason == "" {
			return authn.Result{}, refuse("internal", codes.Internal, nil, "ca: token review failed")
		}
		return authn.Result{}, &refusal{reason: string(reason), status: status.New(authnCode(reason), err.Error()), cause: err}
	}
	if slices.Contains(s.cfg.Reserved, who.ID) {
		return authn.Result{}, refuse("reserved_identity", codes.PermissionDenied, nil, "%s is reserved (meshid's own, or named by the operator): it is never issued to a workload; run the workload as a service account of its own", who.ID)
	}
	if cached {
		s.cfg.Metrics.cacheHits.Inc()
	}
	return who, nil
}

// check checks the CSR against the identity the caller proved and returns
// the key to certify.
func check(der []byte, id spiffeid.ID) (crypto.PublicKey, *refusal) {
	pub, err := csr.Check(der, id)
	if err != nil {
		var e *csr.Error
		if !errors.As(err, &e) {
			return nil, refuse("internal", codes.Internal, nil, "%s", err)
		}
		return nil, refuse(string(e.Reason), csrCode(e.Reason), nil, "%s", err)
	}
	return pub, nil
}

// sign has the issuer in force sign a leaf for id and pub at now, with the
// configured TTL and backdate, never outliving the issuer's chain (anchor
// included).
func (s *Server) sign(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, now time.Time) (*issuer.Issued, *refusal) {
	return s.signFor(ctx, id, pub, now, s.cfg.LeafTTL)
}

// signFor is sign with the TTL ttl.
func (s *Server) signFor(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*issuer.Issued, *refusal) {
	st := s.cfg.Trust.Load()
	if st.Issuer == nil || st.Bundle == nil {
		return nil, refuse("no_issuer", codes.Unavailable, nil, "the CA has not loaded its issuer and trust bundle yet; retry shortly")
	}
	if err := st.Check(now); err != nil {
		return nil, refuse("issuer_invalid", codes.Unavailable, nil, "this CA's issuer cannot sign now (%v); try another replica, and the operator must install a valid issuer", err)
	}
	out, err := st.Issuer.Sign(ctx, issuer.LeafParams{
		ID: id, PublicKey: pub, Now: now, TTL: ttl, Backdate: s.cfg.Backdate,
		MaxNotAfter: st.ChainExpiry(), // never outlive the anchor
	})
	if err != nil {
		return nil, refuse("sign_failed", codes.Internal, err, "the issuer could not sign the certificate; retry, and if it persists the operator finds the cause in the CA's log")
	}
	return out, nil
}

// audit logs the issued certificate: who got it, its serial, lifetime and
// issuer. Never the token or the CSR.
func (s *Server) audit(ctx context.Context, who authn.Result, out *issuer.Issued, renew time.Time) {
	attrs := []slog.Attr{
		slog.String("spiffe_id", who.ID.String()),
		slog.String("serial", out.Serial.Text(16)),
		slog.Time("not_after", out.NotAfter),
		slog.Time("renew_after", renew),
		slog.String("issuer", out.IssuerFingerprint),
	}
	if who.Pod != "" {
		attrs = append(attrs, slog.String("pod", who.ServiceAccount.Namespace+"/"+who.Pod), slog.String("pod_uid", who.PodUID))
	}
	s.cfg.Log.LogAttrs(ctx, slog.LevelInfo, "certificate issued", attrs...)
}

// answer is the reply to a Certify that issued out to id at now.
func answer(id spiffeid.ID, out *issuer.Issued, now, renew time.Time) *identityv1.CertifyResponse {
	resp := &identityv1.CertifyResponse{
		Leaf:       out.DER,
		ValidUntil: timestamppb.New(out.NotAfter),
		RenewAfter: timestamppb.New(renew),
		SpiffeId:   id.String(),
		ServerTime: timestamppb.New(now),
	}
	for _, c := range out.Intermediates {
		resp.Intermediates = append(resp.Intermediates, c.Raw)
	}
	return resp
}

func authnCode(r authn.Reason) codes.Code {
	switch r {
	case authn.Unavailable:
		return codes.Unavailable
	case authn.NotServiceAccount:
		return codes.PermissionDenied
	case authn.Malformed:
		return codes.InvalidArgument
	case authn.Canceled:
		return codes.Canceled
	case authn.AudienceDropped:
		return codes.Internal
	}
	return codes.Unauthenticated
}

func csrCode(r csr.Reason) codes.Code {
	switch r {
	case csr.CARequested, csr.NameMismatch, csr.ExtensionRefused:
		return codes.PermissionDenied
	}
	return codes.InvalidArgument
}

// GetBundle implements identityv1.IdentityServer.
func (s *Server) GetBundle(context.Context, *identityv1.GetBundleRequest) (*identityv1.Bundle, error) {
	st := s.cfg.Trust.Load()
	if st.Bundle == nil {
		return nil, status.Error(codes.Unavailable, "the CA has not loaded a trust bundle yet; retry shortly")
	}
	return s.bundleMessage(st), nil
}

// WatchBundle implements identityv1.IdentityServer.
func (s *Server) WatchBundle(_ *identityv1.WatchBundleRequest, stream identityv1.Identity_WatchBundleServer) error {
	s.cfg.Metrics.bundleWatch.Inc()
	defer s.cfg.Metrics.bundleWatch.Dec()
	ctx := stream.Context()
	var sent *identityv1.Bundle
	for {
		changed := s.cfg.Trust.Changed()
		var jwtChanged, federatedChanged <-chan struct{} // nil: never
		if s.cfg.JWT != nil {
			jwtChanged = s.cfg.JWT.Changed()
		}
		if s.cfg.Federated != nil {
			federatedChanged = s.cfg.Federated.Changed()
		}
		if st := s.cfg.Trust.Load(); st.Bundle != nil {
			msg := s.bundleMessage(st)
			if sent == nil || msg.GetSha256() != sent.GetSha256() || msg.GetIssuerSha256() != sent.GetIssuerSha256() || msg.GetReissueWindowSeconds() != sent.GetReissueWindowSeconds() ||
				!bytes.Equal(msg.GetJwtAuthorities(), sent.GetJwtAuthorities()) || !sameBundles(msg.GetFederated(), sent.GetFederated()) {
				if err := stream.Send(msg); err != nil {
					return fmt.Errorf("ca: send bundle: %w", err)
				}
				sent = msg
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.closed:
			return status.Error(codes.Unavailable, "the CA is shutting down; reconnect to another replica")
		case <-changed:
		case <-jwtChanged:
		case <-federatedChanged:
		}
	}
}

// refusal is a refused Certify: the reason that labels the metric, the
// gRPC status the caller gets, and the cause, which the CA logs but does
// not tell the caller (nil when the status says it all).
type refusal struct {
	reason string
	status *status.Status
	cause  error
}

func refuse(reason string, code codes.Code, cause error, format string, args ...any) *refusal {
	return &refusal{reason: reason, status: status.Newf(code, format, args...), cause: cause}
}

func (r *refusal) Error() string              { return r.status.Err().Error() }
func (r *refusal) GRPCStatus() *status.Status { return r.status }
func (r *refusal) Unwrap() error              { return r.cause }

func (s *Server) bundleMessage(st *trust.State) *identityv1.Bundle {
	msg := &identityv1.Bundle{
		TrustDomain: s.cfg.TrustDomain.Name(), Pem: st.Bundle.PEM(), Sha256: st.Bundle.SHA256(),
		ReissueWindowSeconds: int64(st.ReissueWindow / time.Second),
	}
	if st.Issuer != nil {
		msg.IssuerSha256 = issuer.Fingerprint(st.Issuer)
	}
	if s.cfg.JWT != nil {
		msg.JwtAuthorities = s.cfg.JWT.JWKS(s.cfg.Clock.Now())
	}
	if s.cfg.Federated != nil {
		msg.Federated = s.cfg.Federated.Bundles()
	}
	return msg
}

// ReportStatus implements identityv1.IdentityServer: it files a proxy's
// report under the identity its client certificate proves, never another,
// once fleet.Check and the registry's caps accept it.
func (s *Server) ReportStatus(ctx context.Context, req *identityv1.ProxyStatus) (*identityv1.ReportStatusResponse, error) {
	id, err := s.peerID(ctx)
	if err != nil {
		reason := reasonUnauthenticated
		if status.Code(err) == codes.Unavailable {
			reason = reasonNoBundle
		}
		return nil, s.reportRefused(ctx, reason, spiffeid.ID{}, err)
	}
	p := fleet.Proxy{
		ID: id.String(), Instance: req.GetInstance(), BundleSHA256: req.GetBundleSha256(),
		LeafSerial: req.GetLeafSerial(), LeafIssuerSHA256: req.GetLeafIssuerSha256(), LeafAnchorSHA256: req.GetLeafAnchorSha256(),
		// Clamped so that no value overflows; fleet.Check refuses what is
		// out of range.
		Heartbeat: fleet.Duration(time.Duration(min(max(req.GetHeartbeatSeconds(), -1), math.MaxInt32)) * time.Second),
	}
	if ts := req.GetLeafNotAfter(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, s.reportRefused(ctx, string(fleet.NotAfterInvalid), id,
				status.Errorf(codes.InvalidArgument, "leaf_not_after is not a valid time (%v); send the leaf's NotAfter", err))
		}
		p.LeafNotAfter = ts.AsTime()
	}
	shared, err := s.cfg.Fleet.Report(p)
	if err != nil {
		var fe *fleet.Error
		if !errors.As(err, &fe) {
			return nil, s.reportRefused(ctx, "internal", id, status.Error(codes.Internal, err.Error()))
		}
		code := codes.InvalidArgument
		if fe.Full() {
			code = codes.ResourceExhausted
		}
		return nil, s.reportRefused(ctx, string(fe.Reason), id, status.Error(code, err.Error()))
	}
	if len(shared) > 0 {
		s.cfg.Metrics.fleetConflicts.Inc()
		s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "two identities report the same proxy instance: one of them may be forging status reports; both are kept, so anchor rotation waits for both",
			slog.String("spiffe_id", id.String()), slog.String("instance", p.Instance), slog.Any("also_reported_by", shared))
	}
	return &identityv1.ReportStatusResponse{}, nil
}

// reportRefused counts and logs a refused status report, and returns err.
func (s *Server) reportRefused(ctx context.Context, reason string, id spiffeid.ID, err error) error {
	s.cfg.Metrics.fleetRefused.WithLabelValues(reason).Inc()
	attrs := []slog.Attr{slog.String("reason", reason), slog.String("code", status.Code(err).String()), slog.String("error", status.Convert(err).Message())}
	if !id.IsZero() {
		attrs = append(attrs, slog.String("spiffe_id", id.String()))
	}
	s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "status report refused", attrs...)
	return err
}

// peerID verifies the caller's client certificate against the bundle in
// force and returns its SPIFFE ID. A chain verified before against the same
// bundle, and still within its validity, is not verified again (peers.go).
func (s *Server) peerID(ctx context.Context) (spiffeid.ID, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "present your X.509-SVID as a client certificate (mTLS) to report status")
	}
	b := s.cfg.Trust.Load().Bundle
	if b == nil {
		return spiffeid.ID{}, status.Error(codes.Unavailable, "the CA has no trust bundle yet")
	}
	now, key := s.cfg.Clock.Now(), peerKey(info.State.PeerCertificates)
	if id, ok := s.peers.lookup(b, key, now); ok {
		return id, nil
	}
	id, chains, err := x509svid.Verify(info.State.PeerCertificates, b.X509Bundle(s.cfg.TrustDomain), x509svid.WithTime(now))
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "the client certificate does not verify against the trust bundle: %v", err)
	}
	s.peers.store(b, key, id, chains[0])
	return id, nil
}

// WatchPolicy implements identityv1.IdentityServer.
func (s *Server) WatchPolicy(req *identityv1.WatchPolicyRequest, stream identityv1.Identity_WatchPolicyServer) error {
	if s.cfg.Policies == nil {
		return status.Error(codes.Unimplemented, "this CA does not serve policies (start meshid-ca with --watch-policies)")
	}
	ctx := stream.Context()
	id, err := s.peerID(ctx)
	if err != nil {
		return err
	}
	sa, err := identity.FromID(id)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "%s is not a service account identity", id)
	}
	mode := policy.Mode(req.GetDefaultMode())
	if err := mode.Validate(); err != nil {
		return status.Errorf(codes.InvalidArgument, "default_mode: %v (empty means deny)", err)
	}
	if errs := validation.IsDNS1123Subdomain(req.GetPod()); len(errs) > 0 {
		return status.Errorf(codes.InvalidArgument, "pod %q is not a pod name: %s; pass the proxy's own pod name, e.g. from the downward API", req.GetPod(), strings.Join(errs, "; "))
	}
	// No such pod and another service account's pod get the same answer,
	// which names no one else: a caller learns nothing about which pods
	// exist in its namespace.
	notYours := status.Errorf(codes.PermissionDenied, "pod %s/%s is not a pod that runs as %s: a proxy only gets its own pod's policy; pass its own pod name, e.g. from the downward API", sa.Namespace, req.GetPod(), sa.Name)
	pod, err := s.cfg.Pods(ctx, sa.Namespace, req.GetPod())
	switch {
	case apierrors.IsNotFound(err):
		return notYours
	case err != nil:
		s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "watch policy: cannot read the pod", slog.String("pod", sa.Namespace+"/"+req.GetPod()), slog.String("error", err.Error()))
		return status.Error(codes.Unavailable, "the CA could not read the pod from the Kubernetes API server; retry")
	case pod.Spec.ServiceAccountName != sa.Name:
		return notYours
	}
	sent := ""
	for {
		changed := s.cfg.Policies.Changed()
		if s.cfg.Policies.Synced() {
			data, sum, err := s.cfg.Policies.For(pod, mode)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if sum != sent {
				if err := stream.Send(&identityv1.Policy{Yaml: data, Sha256: sum}); err != nil {
					return fmt.Errorf("ca: send policy: %w", err)
				}
				sent = sum
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.closed:
			return status.Error(codes.Unavailable, "the CA is shutting down; reconnect to another replica")
		case <-changed: // a policy changed, or the first list is done
		}
	}
}

// Fleet returns the proxies that report to this replica.
func (s *Server) Fleet() *fleet.Registry { return s.cfg.Fleet }
