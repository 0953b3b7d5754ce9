// Package admission owns meshid-webhook's admission server: it decodes
// AdmissionReview requests from the API server, answers /inject with the
// sidecar injection patch (package inject decides and builds) and
// /validate with the verdict on an AuthorizationPolicy (the checks of
// policy, plus conflicts), and serves TLS with a certificate it keeps
// fresh itself (see Cert).
//
// It imports webhooks/inject, policy, api/policy and issuer.
package admission

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshid/meshid/webhooks/inject"
)

// MaxRequestSize bounds an AdmissionReview body; pods are far smaller.
const MaxRequestSize = 3 << 20

// Config configures a Server.
type Config struct {
	// Client reads namespaces' labels. Required.
	Client kubernetes.Interface
	// Dynamic lists AuthorizationPolicies, for /validate. Required.
	Dynamic dynamic.Interface
	// TrustDomain policies are checked for. Required.
	TrustDomain spiffeid.TrustDomain
	// Inject is what the sidecar gets. Required.
	Inject inject.Config
	// Listen is the HTTPS address. Required.
	Listen string
	// Cert serves the TLS certificate. Required.
	Cert *Cert
	// Ensure, if set, is called before a pod in namespace ns is injected,
	// to put the trust bundle there; an error skips injection.
	Ensure func(ctx context.Context, ns string) error
	// Log receives a line per decision; nil discards.
	Log *slog.Logger
}

// Server is the admission webhook server.
type Server struct {
	cfg Config
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.Dynamic == nil || cfg.TrustDomain.IsZero() || cfg.Cert == nil || cfg.Listen == "" || cfg.Inject.Image == "" || cfg.Inject.CA == "" {
		return nil, errors.New("admission: Config needs Client, Dynamic, TrustDomain, Cert, Listen, Inject.Image and Inject.CA")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}, nil
}

// Handler serves /inject and /live.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /inject", s.serveInject)
	mux.HandleFunc("POST /validate", s.serveValidate)
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admission: listen %s: %w", s.cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.Cert.GetCertificate},
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.cfg.Log.Info("serving admission webhooks", "address", lis.Addr().String())
	if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admission: %w", err)
	}
	return nil
}

// review decodes an AdmissionReview, or answers 400.
func review(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestSize+1))
	if err != nil || len(body) > MaxRequestSize {
		http.Error(w, "admission: the request is unreadable or larger than 3 MiB", http.StatusBadRequest)
		return nil, false
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil || ar.Request == nil {
		http.Error(w, "admission: the body is not an AdmissionReview with a request", http.StatusBadRequest)
		return nil, false
	}
	return &ar, true
}

func respond(w http.ResponseWriter, ar *admissionv1.AdmissionReview, resp *admissionv1.AdmissionResponse) {
	resp.UID = ar.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: ar.TypeMeta, Response: resp}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) serveInject(w http.ResponseWriter, r *http.Request) {
	ar, ok := review(w, r)
	if !ok {
		return
	}
	resp, err := s.inject(r.Context(), ar.Request)
	if err != nil {
		// Never block a pod on our own failure: let it through without the
		// sidecar, and say why.
		s.cfg.Log.Error("injection failed; admitting the pod without the sidecar", "namespace", ar.Request.Namespace, "name", ar.Request.Name, "error", err)
		resp = &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{"meshid: sidecar not injected: " + err.Error()}}
	}
	respond(w, ar, resp)
}

// inject answers one pod CREATE.
func (s *Server) inject(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	allowed := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allowed, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return nil, fmt.Errorf("decode the pod: %w", err)
	}
	ns, err := s.cfg.Client.CoreV1().Namespaces().Get(ctx, req.Namespace, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read namespace %s: %w", req.Namespace, err)
	}
	yes, reason := inject.Decide(&pod, ns.Labels)
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	if !yes {
		s.cfg.Log.Debug("not injecting", "namespace", req.Namespace, "pod", name, "reason", reason)
		return allowed, nil
	}
	out, err := inject.Pod(&pod, ns.Labels, s.cfg.Inject)
	if err != nil {
		return nil, err
	}
	if s.cfg.Ensure != nil {
		if err := s.cfg.Ensure(ctx, req.Namespace); err != nil {
			return nil, fmt.Errorf("the trust bundle cannot be put in namespace %s: %w", req.Namespace, err)
		}
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "replace", "path": "/spec/containers", "value": out.Spec.Containers},
		{"op": pathOp(pod.Spec.InitContainers != nil), "path": "/spec/initContainers", "value": out.Spec.InitContainers},
		{"op": pathOp(pod.Spec.Volumes != nil), "path": "/spec/volumes", "value": out.Spec.Volumes},
		{"op": pathOp(pod.Annotations != nil), "path": "/metadata/annotations", "value": out.Annotations},
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Log.Info("injected meshid-proxy", "namespace", req.Namespace, "pod", name, "reason", reason)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}, nil
}

func pathOp(exists bool) string {
	if exists {
		return "replace"
	}
	return "add"
}
