package issuer_test

import (
	"testing"
	"time"

	"github.com/meshid/meshid/issuer"
)

func TestRenewAt(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	day := now.Add(24 * time.Hour)
	tests := []struct {
		name     string
		notAfter time.Time
		jitter   float64
		want     time.Time
	}{
		{name: "earliest", notAfter: day, jitter: 0, want: now.Add(12 * time.Hour)},
		{name: "latest", notAfter: day, jitter: 1, want: now.Add(time.Duration(0.7 * float64(24*time.Hour)))},
		{name: "middle", notAfter: day, jitter: 0.5, want: now.Add(time.Duration(0.6 * float64(24*time.Hour)))},
		{name: "jitter clamped high", notAfter: day, jitter: 7, want: now.Add(time.Duration(0.7 * float64(24*time.Hour)))},
		{name: "jitter clamped low", notAfter: day, jitter: -1, want: now.Add(12 * time.Hour)},
		{name: "already expired", notAfter: now.Add(-time.Second), jitter: 0.5, want: now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := issuer.RenewAt(now, tt.notAfter, tt.jitter); !got.Equal(tt.want) {
				t.Fatalf("RenewAt = %s, want %s", got, tt.want)
			}
		})
	}
}
