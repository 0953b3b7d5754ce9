package foreign

import "time"

// Pace says when to fetch a foreign bundle again.
type Pace struct {
	// Default is the wait after a good fetch whose document has no
	// refresh hint; 5 min when 0.
	Default time.Duration
	// Min and Max bound a document's refresh hint; 10 s and 1 h when 0.
	// A peer cannot make us fetch in a loop, nor stop us fetching.
	Min, Max time.Duration
	// Backoff is the wait after the first failure, doubled after each
	// next one up to the refresh interval; 1 s when 0.
	Backoff time.Duration
}

func (p Pace) withDefaults() Pace {
	if p.Default <= 0 {
		p.Default = 5 * time.Minute
	}
	if p.Min <= 0 {
		p.Min = 10 * time.Second
	}
	if p.Max <= 0 {
		p.Max = time.Hour
	}
	if p.Backoff <= 0 {
		p.Backoff = time.Second
	}
	return p
}

// Interval is the wait between good fetches of a document with hint (0:
// none), within Min and Max.
func (p Pace) Interval(hint time.Duration) time.Duration {
	p = p.withDefaults()
	if hint <= 0 {
		hint = p.Default
	}
	return min(max(hint, p.Min), p.Max)
}

// Next is the wait before the next fetch, after failures consecutive
// failures (0 after a good fetch), with the hint of the bundle in force.
func (p Pace) Next(hint time.Duration, failures int) time.Duration {
	interval := p.Interval(hint)
	if failures <= 0 {
		return interval
	}
	p = p.withDefaults()
	wait := p.Backoff
	for i := 1; i < failures && wait < interval; i++ {
		wait *= 2
	}
	return min(wait, interval)
}
