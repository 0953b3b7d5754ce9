package health

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca/fleet"
)

// How many reported proxies get a row of their own: all of them up to
// ListAll; past that only lagging ones, at most ListLagging (-o json lists
// every proxy).
const (
	ListAll     = 10
	ListLagging = 20
)

// reportRows are the replicas' reports and the proxies they serve.
func (c *checker) reportRows() {
	rs := c.in.Reports
	if rs == nil {
		return
	}
	row := Row{Check: "ca reports " + rs.Name}
	logs := c.kubectl("logs", "deployment/"+c.deployment())
	switch {
	case c.skipped(NeedReports) != "":
		row.Status, row.Detail = Skip, c.skipped(NeedReports)
		c.add(row)
		return
	case rs.Err != nil:
		row.Status, row.Detail = Warn, rs.Err.Error()+": the trust rows are read from the Secret and the ConfigMap, not from what meshid-ca has in force"
		row.Hint = c.kubectl("auth", "can-i", "list", "configmaps") + " says whether you may list them"
		c.add(row)
		return
	}
	stale := len(rs.All) - len(c.live)
	var names []string
	for _, r := range c.live {
		names = append(names, r.Replica)
	}
	switch {
	case len(c.live) == 0:
		row.Status = Warn
		row.Detail = fmt.Sprintf("no meshid-ca replica has published a report within %s (%d stale): the trust rows are read from the Secret and the ConfigMap, not from what meshid-ca has in force", fleet.StaleAfter, stale)
		row.Hint = "is meshid-ca running? " + c.kubectl("get", "pods", "-l", "app.kubernetes.io/name="+c.deployment()) + "; its log says why it cannot publish: " + logs
	case c.in.CA != nil && c.in.CA.Err == nil && int(c.in.CA.Ready) > len(c.live):
		row.Status = Warn
		row.Detail = fmt.Sprintf("%d replicas are ready but %d report (%s)", c.in.CA.Ready, len(c.live), strings.Join(names, ", "))
		row.Hint = "a replica cannot publish its report; its log says why: " + logs
	default:
		latest := c.live[0].Updated
		for _, r := range c.live {
			if r.Updated.After(latest) {
				latest = r.Updated
			}
		}
		row.Status, row.Detail = OK, fmt.Sprintf("%d replica(s) report (%s), the latest %s ago", len(c.live), strings.Join(names, ", "), human(c.in.Now.Sub(latest)))
		if stale > 0 {
			row.Detail += fmt.Sprintf("; %d stale report(s) ignored", stale)
		}
	}
	c.add(row)
	if len(c.live) > 0 {
		c.fleetRows()
	}
}

// fleetRows summarise the reported proxies, and list the lagging ones.
func (c *checker) fleetRows() {
	var rows []Row
	worst, lagging := OK, 0
	for _, p := range c.view.Proxies {
		row := c.reported(p)
		c.r.Fleet = append(c.r.Fleet, ProxyStatus{Proxy: p, Status: row.Status, Detail: row.Detail})
		if row.Status != OK {
			lagging++
			worst = worseStatus(worst, row.Status)
		}
		if len(c.view.Proxies) <= ListAll || row.Status != OK {
			rows = append(rows, row)
		}
	}
	total := len(c.view.Proxies)
	sum := Row{Check: "proxies", Status: worst}
	switch {
	case total == 0:
		sum.Detail = "no proxy reports to the CA replicas"
	case lagging == 0:
		sum.Detail = fmt.Sprintf("%d reported: all ok", total)
	default:
		sum.Detail = fmt.Sprintf("%d reported: %d ok, %d lagging", total, total-lagging, lagging)
		sum.Hint = "see the rows of the lagging proxies"
	}
	if len(rows) > ListLagging && total > ListAll {
		sum.Detail += fmt.Sprintf(" (%d shown; -o json lists every proxy)", ListLagging)
		rows = rows[:ListLagging]
	}
	c.add(sum)
	for _, r := range rows {
		c.add(r)
	}
}

func worseStatus(a, b Status) Status {
	rank := map[Status]int{OK: 0, Warn: 1, Fail: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// reported is one reported proxy's row.
func (c *checker) reported(p fleet.Proxy) Row {
	row := Row{Check: fmt.Sprintf("proxy %s (%.8s)", p.ID, p.Instance)}
	if !p.LeafNotAfter.IsZero() {
		t := p.LeafNotAfter
		row.Expires = &t
	}
	left := p.LeafNotAfter.Sub(c.in.Now)
	anchored := slices.ContainsFunc(c.anchors, func(a anchorInfo) bool { return a.sha == p.LeafAnchorSHA256 })
	switch {
	case p.OverCap:
		row.Check = "proxies over a cap " + p.ID
		if p.ID == "" {
			row.Check = "proxies over a cap (any identity)"
		}
		row.Status, row.Detail = Warn, p.Describe(c.in.Now)
		row.Hint = "see meshid_ca_fleet_reports_refused_total; raise meshid-ca's --max-fleet-instances-per-identity or --max-fleet-instances, or stop the flood"
	case p.Silent(c.in.Now):
		row.Status, row.Detail = Warn, fmt.Sprintf("silent for %s: cut off from the CA, or gone (forgotten after %s)", human(c.in.Now.Sub(p.LastSeen)), fleet.Forget)
		row.Hint = "see the proxy's log, and meshid-ca's: " + c.kubectl("logs", "deployment/"+c.deployment())
	case p.LeafNotAfter.IsZero():
		row.Status, row.Detail = Warn, "reports no certificate yet"
		row.Hint = "it cannot get one from meshid-ca: see its log"
	case left <= 0:
		row.Status, row.Detail = Fail, "its certificate expired at "+stamp(p.LeafNotAfter)
		row.Hint = "it cannot renew: see its log, and meshid-ca's: " + c.kubectl("logs", "deployment/"+c.deployment())
		c.expires(row.Check, p.LeafNotAfter)
	case p.LeafAnchorSHA256 != "" && !anchored:
		row.Status, row.Detail = Fail, fmt.Sprintf("its certificate chains to anchor %s, which is not in the bundle in force: peers refuse it", short(p.LeafAnchorSHA256))
		row.Hint = "it renews at renew_after from the issuer in force; restart it to renew now"
	case p.BundleSHA256 != c.bundleSHA:
		row.Status, row.Detail = Warn, fmt.Sprintf("holds bundle %s, the one in force is %s", short(p.BundleSHA256), short(c.bundleSHA))
		row.Hint = "it has not loaded the bundle in force yet: is its bundle stream to meshid-ca up? See its log"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("certificate valid for %s more, bundle in force, seen %s ago", human(left), human(c.in.Now.Sub(p.LastSeen)))
	}
	return row
}

// proxy is the row of a proxy asked directly (--proxies).
func (c *checker) proxy(p Proxy) Row {
	row := Row{Check: "proxy " + p.Addr}
	if p.Err != nil {
		row.Status, row.Detail, row.Hint = Fail, p.Err.Error(), "is meshid-proxy running with --admin-listen at that address?"
		return row
	}
	if len(p.Chain) == 0 {
		row.Status, row.Detail, row.Hint = Fail, "holds no certificate", "see its log: it cannot get one from meshid-ca"
		return row
	}
	leaf := p.Chain[0]
	t := leaf.NotAfter
	row.Expires = &t
	life, left := leaf.NotAfter.Sub(leaf.NotBefore), leaf.NotAfter.Sub(c.in.Now)
	anchors := c.cmBundle
	var verr error
	if anchors != nil {
		_, _, verr = x509svid.Verify(p.Chain, anchors.X509Bundle(c.in.TrustDomain), x509svid.WithTime(c.in.Now))
	}
	switch {
	case c.in.Now.After(leaf.NotAfter):
		row.Status, row.Detail, row.Hint = Fail, "its certificate expired at "+stamp(leaf.NotAfter), "it cannot renew: see its log and meshid-ca's"
	case anchors != nil && verr != nil:
		row.Status, row.Detail, row.Hint = Fail, "its certificate does not chain to the current bundle: "+verr.Error(), "peers with the current bundle refuse it; it renews at renew_after, or restart it"
	case left < life/4:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("its certificate expires in %s, past its renewal time", human(left)), "renewals are failing: see its log"
	case c.bundleSHA != "" && p.BundleSHA256 != c.bundleSHA:
		row.Status, row.Detail, row.Hint = Warn, fmt.Sprintf("holds bundle %s, the cluster's is %s", short(p.BundleSHA256), short(c.bundleSHA)), "it has not loaded the current bundle yet"
	default:
		who := leaf.Subject.String()
		if len(leaf.URIs) > 0 {
			who = leaf.URIs[0].String()
		}
		row.Status, row.Detail = OK, fmt.Sprintf("%s, valid for %s more", who, human(left))
	}
	if left < life/4 {
		// Renewal is overdue: nothing renews it before it expires.
		c.expires(row.Check, leaf.NotAfter)
	}
	c.interception(&row, p)
	return row
}

// interception adds a proxy's mode to its row and fails a transparent one
// whose redirect is missing or not the one meant, or whose destinations
// are stale: its pod's traffic goes around the proxy, or is refused.
func (c *checker) interception(row *Row, p Proxy) {
	if p.Mode == "" {
		return
	}
	var problem, hint string
	switch {
	case p.Mode != "transparent":
	case !p.Redirect.Present:
		problem = "transparent, but its pod's redirect is missing: " + p.Redirect.Problem
		hint = "did meshid-init run (the pod's first init container)? see its log; its traffic is not redirected to the proxy"
	case !p.Redirect.Matching:
		problem = "transparent, but its pod's redirect is not the one meant: " + p.Redirect.Problem
		hint = "see meshid-init's log; recreate the pod to program it again"
	case p.Discovery != nil && !p.Discovery.Fresh:
		problem = "transparent, but its destinations are stale: the CA's discovery stream has not synced"
		if !p.Discovery.BrokeAt.IsZero() {
			problem = "transparent, but its destinations are stale: the CA's discovery stream is down since " + stamp(p.Discovery.BrokeAt)
		}
		hint = "its outbound connections are refused: is meshid-ca running with --discovery, and reachable from the pod? see the proxy's log"
	}
	if problem != "" {
		if row.Status != Fail {
			row.Status, row.Detail, row.Hint = Fail, problem, hint
		}
		return
	}
	if row.Status != OK {
		return
	}
	switch {
	case p.Mode != "transparent":
		row.Detail += "; explicit (no redirect)"
	case p.Discovery != nil && !p.Discovery.LastUpdate.IsZero():
		row.Detail += fmt.Sprintf("; transparent, redirect present and matching, destinations fresh (updated %s ago)", human(c.in.Now.Sub(p.Discovery.LastUpdate)))
	default:
		row.Detail += "; transparent, redirect present and matching"
	}
}
