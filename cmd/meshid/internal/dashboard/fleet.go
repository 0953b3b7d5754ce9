package dashboard

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/rotation/health"
)

// fleetPage is what web/fleet.html shows: every proxy the CA replicas
// report, with check's verdict on each, the ones that need attention
// first.
type fleetPage struct {
	Now time.Time
	// RefreshMS paces the live updates (web/live.js).
	RefreshMS int64
	Proxies   []health.ProxyStatus
	// Fail, Warn and OK count the proxies by status.
	Fail, Warn, OK int
	// Rotation is the anchor rotation, if one was started.
	Rotation rotationView
}

func (s *server) fleet(w http.ResponseWriter, r *http.Request) {
	now := s.clock.Now()
	rep := check.Report(r.Context(), &s.o.Check, s.c, now)
	p := fleetPageOf(rep, now)
	p.RefreshMS = s.refreshMS()
	p.Rotation = s.rotation(r.Context())
	s.render(w, "fleet.html", p)
}

// fleetPageOf orders rep's fleet fail, warn, ok, then by identity and
// instance.
func fleetPageOf(rep *health.Report, now time.Time) fleetPage {
	rank := map[health.Status]int{health.Fail: 0, health.Warn: 1, health.OK: 2}
	p := fleetPage{Now: now, Proxies: slices.Clone(rep.Fleet)}
	slices.SortStableFunc(p.Proxies, func(a, b health.ProxyStatus) int {
		return cmp.Or(cmp.Compare(rank[a.Status], rank[b.Status]), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Instance, b.Instance))
	})
	for _, x := range p.Proxies {
		switch x.Status {
		case health.Fail:
			p.Fail++
		case health.Warn:
			p.Warn++
		case health.OK:
			p.OK++
		}
	}
	return p
}
