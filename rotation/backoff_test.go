package rotation_test

import (
	"testing"
	"time"

	"github.com/meshid/meshid/rotation"
)

// TestBackoff: each wait is between half and all of a step that doubles
// from min and stops at max, and Reset starts again from min. Many rounds,
// as half of each wait is random.
func TestBackoff(t *testing.T) {
	steps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for range 200 {
		b := rotation.NewBackoff(time.Second, 10*time.Second)
		for round := range 2 {
			for i, step := range steps {
				if got := b.Next(); got < step/2 || got > step {
					t.Fatalf("round %d, wait %d = %s, want %s to %s", round, i, got, step/2, step)
				}
			}
			b.Reset()
		}
	}
}
