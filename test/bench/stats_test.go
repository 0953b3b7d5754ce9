package bench

import (
	"math"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	var l Latencies
	for i := 1; i <= 1000; i++ {
		l = append(l, time.Duration(1001-i)*time.Millisecond) // unsorted on purpose
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond, 0.999: 999 * time.Millisecond, 1: time.Second} {
		if got := l.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if l[0] != time.Second {
		t.Error("Quantile sorted the caller's slice")
	}
	if got := (Latencies{}).Quantile(0.5); got != 0 {
		t.Errorf("empty Quantile = %v, want 0", got)
	}
}

func TestFigure(t *testing.T) {
	f := Figure{Runs: []float64{110, 90, 100}}
	if got := f.Median(); got != 100 {
		t.Errorf("Median = %v, want 100", got)
	}
	if got := f.Spread(); math.Abs(got-0.2) > 1e-9 {
		t.Errorf("Spread = %v, want 0.2", got)
	}
	if got := f.String(); got != "100 (±10%)" {
		t.Errorf("String = %q", got)
	}
	if got := (Figure{Runs: []float64{1, 3}}).Median(); got != 2 {
		t.Errorf("even Median = %v, want 2", got)
	}
	if !math.IsNaN((Figure{}).Median()) || Ratio(1, 0) != "n/a" || Ratio(1, 4) != "25%" {
		t.Error("empty figure or ratio by zero not reported as missing")
	}
}
