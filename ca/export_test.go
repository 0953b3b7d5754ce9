package ca

import (
	"log/slog"

	"google.golang.org/grpc/stats"
)

// NewTooLarge gives the external tests the stats handler that counts
// requests gRPC refuses for their size.
func NewTooLarge(m *Metrics, log *slog.Logger) stats.Handler { return newTooLarge(m, log) }
