package dashboard

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/rotation/health"
)

// trustPage is what web/trust.html shows.
type trustPage struct {
	Now time.Time
	// RefreshMS paces the live updates (web/live.js).
	RefreshMS int64
	Report    *health.Report
	Worst     health.Status
	Timeline  timeline
}

// timeline is the SVG expiry timeline: one mark per row with an expiry,
// and check's thresholds as lines, on an axis from now to after the last.
type timeline struct {
	Width, Height int
	Marks         []mark
	Thresholds    []threshold
	End           time.Time
}

type mark struct {
	X, Y int
	// Left: the label ends at the mark (marks in the right half).
	Left    bool
	Check   string
	Expires time.Time
	Status  health.Status
}

type threshold struct {
	X     int
	Label string
}

const axisLeft, axisWidth = 10, 880

func (s *server) trust(w http.ResponseWriter, r *http.Request) {
	now := s.clock.Now()
	rep := check.Report(r.Context(), &s.o.Check, s.c, now)
	s.render(w, "trust.html", trustPage{Now: now, RefreshMS: s.refreshMS(), Report: rep, Worst: rep.Worst(), Timeline: timelineOf(rep, now, s.o.Check.WarnWithin, s.o.Check.IssuerWarnWithin)})
}

// timelineOf places every row with an expiry, earliest first, and the
// warning windows (anchors: warnWithin; the issuer: issuerWarnWithin when
// set) as lines.
func timelineOf(rep *health.Report, now time.Time, warnWithin, issuerWarnWithin time.Duration) timeline {
	var rows []health.Row
	end := now.Add(warnWithin)
	for _, row := range rep.Rows {
		if row.Expires != nil {
			rows = append(rows, row)
			end = maxTime(end, *row.Expires)
		}
	}
	slices.SortStableFunc(rows, func(a, b health.Row) int { return a.Expires.Compare(*b.Expires) })
	end = end.Add(end.Sub(now) / 20)
	x := func(t time.Time) int {
		if !t.After(now) {
			return axisLeft
		}
		return axisLeft + int(float64(axisWidth)*float64(t.Sub(now))/float64(end.Sub(now)))
	}
	tl := timeline{Width: axisLeft*2 + axisWidth, Height: 60 + 22*len(rows), End: end}
	for i, row := range rows {
		tl.Marks = append(tl.Marks, mark{X: x(*row.Expires), Y: 50 + 22*i, Left: x(*row.Expires) > axisLeft+axisWidth/2, Check: row.Check, Expires: *row.Expires, Status: row.Status})
	}
	if warnWithin > 0 {
		tl.Thresholds = append(tl.Thresholds, threshold{X: x(now.Add(warnWithin)), Label: "anchor warning: " + days(warnWithin)})
	}
	if issuerWarnWithin > 0 {
		tl.Thresholds = append(tl.Thresholds, threshold{X: x(now.Add(issuerWarnWithin)), Label: "issuer: " + days(issuerWarnWithin)})
	}
	return tl
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d d", d/(24*time.Hour))
	}
	return d.String()
}
