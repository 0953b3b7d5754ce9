package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

// DefaultExternalLeafTTL is the lifetime of an external workload's
// certificate: short, since a machine outside the cluster is cut off only
// when its last certificate expires.
const DefaultExternalLeafTTL = time.Hour

// ExternalStore reads ExternalWorkloads and writes their status;
// *external.Store is one.
type ExternalStore interface {
	// Get returns nil, nil when the object does not exist.
	Get(ctx context.Context, ns, name string) (*v1alpha1.ExternalWorkload, error)
	// UpdateStatus fails with external.ErrChanged when the object is no
	// longer at the resourceVersion read.
	UpdateStatus(ctx context.Context, w *v1alpha1.ExternalWorkload) (*v1alpha1.ExternalWorkload, error)
}

// externalMetrics count JoinExternal and RenewExternal, by method (join,
// renew).
type externalMetrics struct {
	issued, refused *prometheus.CounterVec
}

func newExternalMetrics(reg *prometheus.Registry) externalMetrics {
	m := externalMetrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_external_certificates_issued_total",
			Help: "Certificates issued to ExternalWorkloads, by method: join (a join token) or renew (the current certificate).",
		}, []string{"method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_ca_external_refused_total",
			Help: "JoinExternal and RenewExternal calls refused, by method and reason.",
		}, []string{"method", "reason"}),
	}
	for _, method := range []string{"join", "renew"} {
		m.issued.WithLabelValues(method)
		for _, r := range external.Reasons {
			m.refused.WithLabelValues(method, string(r))
		}
	}
	reg.MustRegister(m.issued, m.refused)
	return m
}

// JoinExternal implements identityv1.IdentityServer.
func (s *Server) JoinExternal(ctx context.Context, req *identityv1.JoinExternalRequest) (*identityv1.CertifyResponse, error) {
	if s.cfg.External == nil {
		return nil, errExternalOff
	}
	resp, r := s.joinExternal(ctx, req)
	return s.externalDone(ctx, "join", req.GetNamespace()+"/"+req.GetName(), resp, r)
}

// RenewExternal implements identityv1.IdentityServer.
func (s *Server) RenewExternal(ctx context.Context, req *identityv1.RenewExternalRequest) (*identityv1.CertifyResponse, error) {
	if s.cfg.External == nil {
		return nil, errExternalOff
	}
	resp, r := s.renewExternal(ctx, req)
	return s.externalDone(ctx, "renew", req.GetName(), resp, r)
}

var errExternalOff = refuse("external_off", codes.Unimplemented, nil, "this CA serves no external workloads (start meshid-ca with --external-workloads)")

// joinExternal: the token checked against the object's pending one, the
// CSR against the identity of its service account, signed, and the token
// used up in the status before the certificate is handed out.
func (s *Server) joinExternal(ctx context.Context, req *identityv1.JoinExternalRequest) (*identityv1.CertifyResponse, *refusal) {
	if r := checkSize(req.GetCsr()); r != nil {
		return nil, r
	}
	ns, name := req.GetNamespace(), req.GetName()
	if r := checkName("namespace", ns); r != nil {
		return nil, r
	}
	if r := checkName("name", name); r != nil {
		return nil, r
	}
	w, r := s.getExternal(ctx, ns, name)
	if r != nil {
		return nil, r
	}
	now := s.cfg.Clock.Now()
	sa, err := external.CheckJoin(w, ns, name, req.GetToken(), now)
	if err != nil {
		return nil, externalRefusal(err)
	}
	return s.issueExternal(ctx, w, sa, req.GetCsr(), now, true)
}

// renewExternal: the caller's certificate verified, and the one the CA
// issued last to the named object, which must still exist.
func (s *Server) renewExternal(ctx context.Context, req *identityv1.RenewExternalRequest) (*identityv1.CertifyResponse, *refusal) {
	if r := checkSize(req.GetCsr()); r != nil {
		return nil, r
	}
	id, err := s.peerID(ctx)
	if err != nil {
		return nil, &refusal{reason: reasonUnauthenticated, status: status.Convert(err)}
	}
	sa, err := identity.FromID(id)
	if err != nil {
		return nil, refuse(string(external.AccountMismatch), codes.PermissionDenied, nil, "%s is not a service account's identity", id)
	}
	if r := checkName("name", req.GetName()); r != nil {
		return nil, r
	}
	w, r := s.getExternal(ctx, sa.Namespace, req.GetName())
	if r != nil {
		return nil, r
	}
	if err := external.CheckRenew(w, sa, req.GetName(), peerLeaf(ctx).SerialNumber.Text(16)); err != nil {
		return nil, externalRefusal(err)
	}
	return s.issueExternal(ctx, w, sa, req.GetCsr(), s.cfg.Clock.Now(), false)
}

// issueExternal checks the CSR against sa's identity, signs with the
// external TTL, and records the certificate in w's status; a certificate
// the status does not name is never handed out.
func (s *Server) issueExternal(ctx context.Context, w *v1alpha1.ExternalWorkload, sa identity.ServiceAccount, csrDER []byte, now time.Time, join bool) (*identityv1.CertifyResponse, *refusal) {
	id, err := sa.ID(s.cfg.TrustDomain)
	if err != nil {
		return nil, refuse(string(external.AccountMismatch), codes.FailedPrecondition, nil, "ExternalWorkload %s/%s names service account %q, which makes no SPIFFE ID (%v): the operator must fix spec.serviceAccount", w.Namespace, w.Name, sa.Name, err)
	}
	if slices.Contains(s.cfg.Reserved, id) {
		return nil, refuse("reserved_identity", codes.PermissionDenied, nil, "%s is reserved (meshid's own, or named by the operator): it is never issued to a workload; give the ExternalWorkload a service account of its own", id)
	}
	pub, r := check(csrDER, id)
	if r != nil {
		return nil, r
	}
	out, r := s.signFor(ctx, id, pub, now, s.cfg.ExternalLeafTTL)
	if r != nil {
		return nil, r
	}
	serial := out.Serial.Text(16)
	external.Issued(w, serial, out.NotAfter, now, join)
	if _, err := s.cfg.External.UpdateStatus(ctx, w); err != nil {
		if errors.Is(err, external.ErrChanged) {
			return nil, refuse(string(external.Changed), codes.Aborted, err, "ExternalWorkload %s/%s changed while the CA signed (revoked, deleted, or joined by another call): nothing was issued; retry, or join again", w.Namespace, w.Name)
		}
		return nil, refuse("api_unavailable", codes.Unavailable, err, "the CA could not record the certificate in ExternalWorkload %s/%s: nothing was issued; retry", w.Namespace, w.Name)
	}
	renew := issuer.RenewAt(now, out.NotAfter, s.cfg.Jitter())
	s.auditExternal(ctx, w, id, out, renew, join)
	return answer(id, out, now, renew), nil
}

// getExternal reads the object from the API server (nil: none).
func (s *Server) getExternal(ctx context.Context, ns, name string) (*v1alpha1.ExternalWorkload, *refusal) {
	w, err := s.cfg.External.Get(ctx, ns, name)
	if err != nil {
		return nil, refuse("api_unavailable", codes.Unavailable, err, "the CA could not read ExternalWorkload %s/%s from the Kubernetes API server; retry", ns, name)
	}
	return w, nil
}

func checkName(what, v string) *refusal {
	if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
		return refuse("external_name_invalid", codes.InvalidArgument, nil, "%s %q is not a Kubernetes name: %s; pass the ExternalWorkload's %s", what, v, strings.Join(errs, "; "), what)
	}
	return nil
}

func externalRefusal(err error) *refusal {
	var e *external.Error
	if !errors.As(err, &e) {
		return refuse("internal", codes.Internal, err, "the CA could not decide the request")
	}
	var cause error
	if e.Detail != "" {
		cause = errors.New(e.Detail)
	}
	return refuse(string(e.Reason), codes.PermissionDenied, cause, "%s", e.Error())
}

// externalDone counts and logs the outcome of a join or renewal of what.
func (s *Server) externalDone(ctx context.Context, method, what string, resp *identityv1.CertifyResponse, r *refusal) (*identityv1.CertifyResponse, error) {
	if r == nil {
		s.cfg.Metrics.external.issued.WithLabelValues(method).Inc()
		return resp, nil
	}
	s.cfg.Metrics.external.refused.WithLabelValues(method, r.reason).Inc()
	msg := r.status.Message()
	if r.cause != nil {
		msg += ": " + r.cause.Error()
	}
	s.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "external workload "+method+" refused", slog.String("external_workload", what),
		slog.String("reason", r.reason), slog.String("code", r.status.Code().String()), slog.String("error", msg))
	return nil, r
}

// auditExternal logs a certificate issued to w. Never the token or the CSR.
func (s *Server) auditExternal(ctx context.Context, w *v1alpha1.ExternalWorkload, id spiffeid.ID, out *issuer.Issued, renew time.Time, join bool) {
	method := "renew"
	if join {
		method = "join"
	}
	s.cfg.Log.LogAttrs(ctx, slog.LevelInfo, "certificate issued", slog.String("spiffe_id", id.String()),
		slog.String("external_workload", w.Namespace+"/"+w.Name), slog.String("method", method),
		slog.String("serial", out.Serial.Text(16)), slog.Time("not_after", out.NotAfter), slog.Time("renew_after", renew),
		slog.String("issuer", out.IssuerFingerprint))
}

// peerLeaf is the client certificate peerID verified.
func peerLeaf(ctx context.Context) *x509.Certificate {
	pr, _ := peer.FromContext(ctx)
	info, _ := pr.AuthInfo.(credentials.TLSInfo)
	return info.State.PeerCertificates[0]
}
