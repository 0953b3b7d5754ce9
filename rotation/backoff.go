package rotation

import (
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff paces retries: each wait doubles from Min to Max, half of it
// fixed and half random, so a fleet that failed together does not retry
// together. The zero value is not usable; use NewBackoff.
type Backoff struct {
	min, max, next time.Duration
}

// NewBackoff returns a Backoff from min to max.
func NewBackoff(min, max time.Duration) *Backoff {
	return &Backoff{min: min, max: max, next: min}
}

// Next returns how long to wait before the next retry.
func (b *Backoff) Next() time.Duration {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, b.max)
	return d
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.next = b.min }

// RetryIn is the log attribute for a backoff's wait, as a readable
// duration ("1.234s") rather than nanoseconds.
func RetryIn(wait time.Duration) slog.Attr {
	return slog.String("retry_in", wait.Round(time.Millisecond).String())
}
