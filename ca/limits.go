package ca

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/ca/limit"
)

// Default per-caller limits. A caller is an IP address: in a cluster, a
// pod. A proxy holds one connection, two streams (bundle and policy) and
// one call at a time, so these leave room for many proxies behind one
// address (host-network pods, a NAT) while one client cannot take the CA.
const (
	DefaultMaxConnectionsPerCaller = 64
	DefaultMaxCallsPerCaller       = 32
	DefaultMaxStreamsPerCaller     = 64
)

// callerLimits bounds the calls and streams one caller has open at once.
type callerLimits struct {
	calls, streams *limit.Counter
	m              *Metrics
}

func newCallerLimits(calls, streams int, m *Metrics) *callerLimits {
	return &callerLimits{calls: limit.NewCounter(calls), streams: limit.NewCounter(streams), m: m}
}

func (l *callerLimits) acquire(ctx context.Context, c *limit.Counter, kind, flag string) (func(), error) {
	caller := ""
	if p, ok := peer.FromContext(ctx); ok {
		caller = limit.Caller(p.Addr)
	}
	release, ok := c.Acquire(caller)
	if !ok {
		l.m.callerLimited.WithLabelValues(kind).Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"ca: %s already has %d %s open, the most one caller may (%s); retry later with backoff", caller, c.Max(), kind, flag)
	}
	return release, nil
}

func (l *callerLimits) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	release, err := l.acquire(ctx, l.calls, "calls", "--max-calls-per-caller")
	if err != nil {
		return nil, err
	}
	defer release()
	return handler(ctx, req)
}

func (l *callerLimits) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	release, err := l.acquire(ss.Context(), l.streams, "streams", "--max-streams-per-caller")
	if err != nil {
		return err
	}
	defer release()
	return handler(srv, ss)
}
