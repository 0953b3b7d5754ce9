package ca

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/stats"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/issuer"
)

// NewTooLarge gives the external tests the stats handler that counts
// requests gRPC refuses for their size.
func NewTooLarge(m *Metrics, log *slog.Logger) stats.Handler { return newTooLarge(m, log) }

// The steps of Certify, for ca_test. Each returns its refusal as an error;
// ReasonOf reads its metric reason.

func (s *Server) Authenticate(ctx context.Context, token string) (authn.Result, error) {
	who, r := s.authenticate(ctx, token)
	return who, asError(r)
}

func CheckSize(der []byte) error { return asError(checkSize(der)) }

func Check(der []byte, id spiffeid.ID) (crypto.PublicKey, error) {
	pub, r := check(der, id)
	return pub, asError(r)
}

func (s *Server) Sign(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey, now time.Time) (*issuer.Issued, error) {
	out, r := s.sign(ctx, id, pub, now)
	return out, asError(r)
}

func (s *Server) Audit(ctx context.Context, who authn.Result, out *issuer.Issued, renew time.Time) {
	s.audit(ctx, who, out, renew)
}

var Answer = answer

// ReasonOf returns the metric reason of a refusal, or "" for other errors.
func ReasonOf(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}

func asError(r *refusal) error {
	if r == nil {
		return nil
	}
	return r
}

// FleetConfigMaps is how publishFleet writes the fleet ConfigMaps.
type FleetConfigMaps = cachedConfigMaps

func NewFleetConfigMaps(api configMaps, namespace string) *FleetConfigMaps {
	return &cachedConfigMaps{api: api, namespace: namespace, last: map[string]*corev1.ConfigMap{}}
}

func (c *cachedConfigMaps) Put(ctx context.Context, name, key string, data []byte) error {
	return c.put(ctx, name, key, data)
}
