package health

import (
	"fmt"
	"slices"

	"github.com/meshid/meshid/ca/fleet"
)

// upstream reports whether the replicas get their issuer from an upstream
// authority (meshid-ca --issuer-source step-ca): their reports say so.
func (c *checker) upstream() bool {
	return slices.ContainsFunc(c.live, func(r fleet.Report) bool { return r.Upstream != nil })
}

// upstreamRows are one row per replica whose issuer comes from an upstream:
// whether it reaches it, its last and next renewal, what is left of its
// intermediate (the time to outage if the upstream stays down) and where
// the key lives.
func (c *checker) upstreamRows() {
	for _, r := range c.live {
		if r.Upstream != nil {
			c.add(c.upstreamRow(r.Replica, *r.Upstream))
		}
	}
}

func (c *checker) upstreamRow(replica string, u fleet.Upstream) Row {
	row := Row{Check: "upstream " + replica}
	now := c.in.Now
	reach := "reachable"
	if !u.Reachable {
		reach = "unreachable"
	}
	key := "key in " + u.KeyLocation
	logs := "why: " + c.kubectl("logs", "deployment/"+c.deployment()) + " and " + c.kubectl("get", "events", "--field-selector", "type=Warning")
	failing := fmt.Sprintf("%d renewal(s) failed in a row, the last: %s", u.Failures, u.LastError)
	switch {
	case u.NotAfter.IsZero():
		row.Status, row.Detail = Fail, fmt.Sprintf("%s %s, no intermediate obtained yet: the replica cannot sign; %s; %s", u.Upstream, reach, failing, key)
		row.Hint = logs
		return row
	case now.After(u.NotAfter):
		row.Status, row.Detail = Fail, fmt.Sprintf("%s %s, the intermediate expired at %s: the replica cannot sign; %s; next attempt %s; %s", u.Upstream, reach, stamp(u.NotAfter), failing, stamp(u.NextRenewal), key)
		row.Hint = logs
		return row
	}
	t := u.NotAfter
	row.Expires = &t
	left := u.NotAfter.Sub(now)
	switch {
	case u.Failures > 0:
		row.Status, row.Detail = Warn, fmt.Sprintf("%s %s, %s; the intermediate in force is valid for %s more (the time to outage if the upstream stays down), last renewal %s, next attempt %s; %s",
			u.Upstream, reach, failing, human(left), stamp(u.LastRenewal), stamp(u.NextRenewal), key)
		row.Hint = logs
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("%s %s, last renewal %s, next %s, the intermediate is valid for %s more; %s",
			u.Upstream, reach, stamp(u.LastRenewal), stamp(u.NextRenewal), human(left), key)
	}
	return row
}
