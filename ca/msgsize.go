package ca

import (
	"context"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/limit"
)

// tooLarge counts the requests gRPC refuses for their size. gRPC reads a
// message's length first and answers RESOURCE_EXHAUSTED when it is over
// grpc.MaxRecvMsgSize, before any interceptor or handler runs, so the
// handlers' own refusal metrics never see them. A stats handler does: a
// unary call that ends in RESOURCE_EXHAUSTED without a received message was
// refused while its message was read (too large, or too large once
// decompressed). The caller limits answer RESOURCE_EXHAUSTED only after the
// message is read, so they are not counted twice.
type tooLarge struct {
	counters map[string]func() // by full method name: the unary calls with a refusal metric
	log      *slog.Logger
}

func newTooLarge(m *Metrics, log *slog.Logger) *tooLarge {
	return &tooLarge{
		counters: map[string]func(){
			identityv1.Identity_Certify_FullMethodName:      m.refused.WithLabelValues(reasonTooLarge).Inc,
			identityv1.Identity_ReportStatus_FullMethodName: m.fleetRefused.WithLabelValues(reasonTooLarge).Inc,
		},
		log: log,
	}
}

// call is what the handler keeps about one call.
type call struct {
	method   string
	count    func()
	received atomic.Bool
}

type callKey struct{}

func (h *tooLarge) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	count, ok := h.counters[info.FullMethodName]
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, callKey{}, &call{method: info.FullMethodName, count: count})
}

func (h *tooLarge) HandleRPC(ctx context.Context, s stats.RPCStats) {
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.InPayload:
		c.received.Store(true)
	case *stats.End:
		if c.received.Load() || status.Code(s.Error) != codes.ResourceExhausted {
			return
		}
		c.count()
		// gRPC's message says how large the request was, and the limit.
		attrs := []slog.Attr{slog.String("method", c.method), slog.String("reason", reasonTooLarge), slog.String("error", status.Convert(s.Error).Message())}
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, slog.String("caller", limit.Caller(p.Addr)))
		}
		h.log.LogAttrs(ctx, slog.LevelWarn, "request refused", attrs...)
	}
}

func (*tooLarge) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (*tooLarge) HandleConn(context.Context, stats.ConnStats)                       {}
