package health

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/bundle"
)

// StaleAfter is how old a foreign bundle's last good fetch may be before
// its row warns: twice the longest refresh interval meshid-ca keeps (1 h).
const StaleAfter = 2 * time.Hour

// Federated are the FederatedTrustDomains read.
type Federated struct {
	Items []v1alpha1.FederatedTrustDomain
	// Err is why they could not be listed.
	Err error
}

// federationRows adds a row per federated trust domain: its last good
// fetch and age, its anchors' earliest expiry (which counts in the time to
// outage: its peers stop verifying then), its refused fetches.
func (c *checker) federationRows() {
	f := c.in.Federated
	if f == nil {
		return
	}
	if f.Err != nil {
		c.add(Row{Check: "federated trust domains", Status: Warn, Detail: "cannot list FederatedTrustDomains: " + f.Err.Error(),
			Hint: "check needs list on federatedtrustdomains.meshid.dev: " + c.kubectlCluster("auth", "can-i", "list", "federatedtrustdomains.meshid.dev")})
		return
	}
	for _, ftd := range f.Items {
		c.add(c.federated(ftd))
	}
}

func (c *checker) federated(ftd v1alpha1.FederatedTrustDomain) Row {
	now := c.in.Now
	row := Row{Check: "federated trust domain " + ftd.Spec.TrustDomain, Status: OK}
	hint := c.kubectlCluster("get", "federatedtrustdomain", ftd.Name, "-o", "yaml") + ": status.lastError says why the last fetch was refused; check spec.bundleEndpointURL and spec.endpointSPIFFEID"
	_, anchors, source, err := ftd.Anchors()
	if err != nil {
		row.Status, row.Detail, row.Hint = Fail, err.Error()+"; its peers do not verify", hint
		return row
	}
	var parts []string
	if ftd.Status.LastRefresh == nil {
		row.Status = Warn
		parts = append(parts, "never fetched: trusting the initial bundle")
		row.Hint = hint
	} else {
		age := now.Sub(ftd.Status.LastRefresh.Time)
		parts = append(parts, fmt.Sprintf("last refresh %s (%s ago)", stamp(ftd.Status.LastRefresh.Time), human(age)))
		if age > StaleAfter {
			row.Status, row.Hint = Warn, hint
			parts = append(parts, fmt.Sprintf("older than %s", human(StaleAfter)))
		}
	}
	earliest := anchors[0]
	for _, a := range anchors[1:] {
		if a.NotAfter.Before(earliest.NotAfter) {
			earliest = a
		}
	}
	exp := earliest.NotAfter
	row.Expires = &exp
	c.expires(fmt.Sprintf("the anchor of federated trust domain %s (%s)", ftd.Spec.TrustDomain, short(bundle.Fingerprint(earliest))), exp)
	parts = append(parts, fmt.Sprintf("%d anchors from the %s, the earliest expiring %s (in %s)", len(anchors), source, stamp(exp), days(exp.Sub(now))))
	switch {
	case !now.Before(exp):
		row.Status, row.Hint = Fail, fmt.Sprintf("the foreign trust domain must publish a new anchor, and meshid-ca fetch it; %s", hint)
	case exp.Sub(now) < c.in.WarnWithin && row.Status == OK:
		row.Status, row.Hint = Warn, hint
	}
	if ftd.Status.Failures > 0 {
		if row.Status == OK {
			row.Status, row.Hint = Warn, hint
		}
		parts = append(parts, fmt.Sprintf("%d refused fetches since the last good one, the latest: %s", ftd.Status.Failures, ftd.Status.LastError))
	}
	row.Detail = strings.Join(parts, "; ")
	return row
}
