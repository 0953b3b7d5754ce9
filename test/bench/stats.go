package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Latencies are the latencies of one run.
type Latencies []time.Duration

// Quantile returns the q-quantile (0 < q <= 1) by the nearest-rank method.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Figure is one measured quantity over several runs.
type Figure struct {
	Runs []float64
}

// Add records one run.
func (f *Figure) Add(v float64) { f.Runs = append(f.Runs, v) }

// Median is the median over the runs.
func (f Figure) Median() float64 {
	if len(f.Runs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(f.Runs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// Spread is (max-min)/median over the runs: how noisy the figure was.
func (f Figure) Spread() float64 {
	if len(f.Runs) < 2 {
		return 0
	}
	m := f.Median()
	if m == 0 {
		return 0
	}
	return (slices.Max(f.Runs) - slices.Min(f.Runs)) / m
}

// String is the median with its spread, e.g. "1234 (±3%)".
func (f Figure) String() string {
	return fmt.Sprintf("%s (±%.0f%%)", short(f.Median()), f.Spread()*50)
}

// short prints v with a precision that suits its size.
func short(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Ratio returns a/b as a percentage string, "n/a" when b is 0.
func Ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

// Millis converts d to milliseconds.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
