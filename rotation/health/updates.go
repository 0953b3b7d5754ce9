package health

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
)

// pending is one update the replicas did not take, and which replicas.
type pending struct {
	u        fleet.Update
	replicas []string
}

// pendingUpdates groups the replicas' records of material.
func (c *checker) pendingUpdates(material string) []pending {
	var out []pending
	for _, r := range c.live {
		for _, u := range r.Updates {
			if u.Material != material {
				continue
			}
			i := slices.IndexFunc(out, func(p pending) bool {
				return p.u.Status == u.Status && p.u.SHA256 == u.SHA256 && p.u.Source == u.Source && p.u.Reason == u.Reason
			})
			if i < 0 {
				out = append(out, pending{u: u})
				i = len(out) - 1
			}
			out[i].replicas = append(out[i].replicas, r.Replica)
			if u.Since.Before(out[i].u.Since) {
				out[i].u.Since = u.Since
			}
		}
	}
	return out
}

// update is the row of a pending update of material ("issuer" or
// "bundle"): one the replicas refused, hold back or lost, or what the
// object holds that is not in force. ok is false when nothing is pending.
func (c *checker) update(material, name string) (row Row, ok bool) {
	groups := c.pendingUpdates(material)
	var (
		object, objSHA, objWhat string
		objErr, invalid         error
		skipped                 bool
		inForce                 = map[string]bool{}
	)
	if material == "issuer" {
		object, skipped, objErr = "Secret "+c.in.IssuerName, c.skipped(NeedIssuer) != "", c.secretErr
		for _, f := range c.issuers {
			inForce[f.sha] = true
		}
		if c.secret != nil {
			objSHA, objWhat = c.secret.Fingerprint(), c.secret.Cert.Subject.String()
			if c.cmBundle != nil {
				invalid = c.secret.Verify(c.cmBundle, c.in.Now)
			}
		}
	} else {
		object, skipped, objErr = "ConfigMap "+c.in.BundleName, c.skipped(NeedBundle) != "", c.cmErr
		for _, r := range c.live {
			inForce[r.BundleSHA256] = true
		}
		if c.cmBundle != nil {
			objSHA, objWhat = c.cmBundle.SHA256(), fmt.Sprintf("%d anchor(s)", len(c.cmBundle.Anchors()))
			invalid = c.orphans(c.cmBundle)
		}
	}
	// An upstream issuer (meshid-ca --issuer-source step-ca) has no
	// Secret: only what the replicas report counts.
	fromUpstream := material == "issuer" && c.upstream()
	differs := !skipped && objErr == nil && !inForce[objSHA] && !fromUpstream
	missing := !skipped && objErr != nil && !fromUpstream
	if len(groups) == 0 && !differs && !missing {
		return Row{}, false
	}

	var parts []string
	switch {
	case missing:
		parts = append(parts, object+": "+objErr.Error())
	case differs:
		parts = append(parts, fmt.Sprintf("%s holds %s (sha256 %s), not the %s in force", object, objWhat, short(objSHA), material))
	}
	status := fleet.UpdateStatus("")
	for _, g := range groups {
		status = worse(status, g.u.Status)
		parts = append(parts, fmt.Sprintf("%s by %s since %s: %s", statusWords[g.u.Status], c.replicasLabel(g.replicas), stamp(g.u.Since), g.u.Reason))
	}
	if len(groups) == 0 && differs && invalid != nil {
		parts = append(parts, "meshid-ca will not take it: "+invalid.Error())
		status = fleet.UpdateRefused
	}
	parts = append(parts, c.keeps(material))

	row = Row{Check: name, Status: Fail, Detail: strings.Join(parts, "; ")}
	switch {
	case status == "" && missing:
		status = fleet.UpdateGone
	case status == "":
		row.Status = Warn
		row.Detail = strings.Join(parts, "; ") + ": not loaded yet"
		row.Hint = "meshid-ca takes an update within seconds; if this lasts, its log says why: " + c.kubectl("logs", "deployment/"+c.deployment())
		return row, true
	}
	row.Hint = c.updateHint(material, status)
	if fromUpstream {
		row.Hint = "the replicas renew from their upstream by themselves; see the upstream rows, and why in " + c.kubectl("logs", "deployment/"+c.deployment())
	}
	return row, true
}

// orphans says why meshid-ca would hold b back: it does not hold the
// anchor an issuer in force chains to.
func (c *checker) orphans(b *bundle.Bundle) error {
	for _, f := range c.issuers {
		if f.info == nil || f.info.AnchorSHA256 == "" {
			continue
		}
		if !slices.ContainsFunc(b.Anchors(), func(a *x509.Certificate) bool { return bundle.Fingerprint(a) == f.info.AnchorSHA256 }) {
			return fmt.Errorf("it does not hold anchor %s, which the issuer in force chains to: certificates it signs would not verify, so it is held back", short(f.info.AnchorSHA256))
		}
	}
	return nil
}

var statusWords = map[fleet.UpdateStatus]string{
	fleet.UpdateRefused:  "refused",
	fleet.UpdateHeldBack: "held back",
	fleet.UpdateGone:     "lost",
}

// worse orders what a pending update needs most: a refusal, then a loss,
// then a hold.
func worse(a, b fleet.UpdateStatus) fleet.UpdateStatus {
	rank := map[fleet.UpdateStatus]int{"": 0, fleet.UpdateHeldBack: 1, fleet.UpdateGone: 2, fleet.UpdateRefused: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func (c *checker) replicasLabel(rs []string) string {
	if len(rs) == len(c.live) {
		return fmt.Sprintf("%d of %d replicas", len(rs), len(c.live))
	}
	return "replica " + strings.Join(rs, ", ")
}

// keeps says what stays in force meanwhile.
func (c *checker) keeps(material string) string {
	if material == "bundle" {
		if c.bundleSHA == "" {
			return "no bundle is in force"
		}
		return "meshid-ca keeps bundle " + short(c.bundleSHA) + " in force"
	}
	if len(c.issuers) == 0 {
		return "no issuer is in force: meshid-ca cannot sign"
	}
	f := c.issuers[0]
	s := "meshid-ca keeps signing with issuer " + short(f.sha)
	if f.info != nil {
		s += fmt.Sprintf(", valid for %s more", days(f.info.NotAfter.Sub(c.in.Now)))
	}
	return s
}

func (c *checker) updateHint(material string, status fleet.UpdateStatus) string {
	cm := c.in.CertManager
	if material == "bundle" {
		switch status {
		case fleet.UpdateGone:
			return "put the anchors in force back (anchors.pem): " + c.pipeApply(c.kubectl("create", "configmap", c.bundleObject(), "--from-file=ca-bundle.crt=anchors.pem", "--dry-run=client", "-o", "yaml"))
		case fleet.UpdateHeldBack:
			return "it drops the anchor the issuer chains to: put that anchor back (" + c.kubectl("edit", "configmap", c.bundleObject()) + "), or replace anchor and issuer in order with " + c.rotate(false)
		}
		return "put PEM CA certificates only under key ca-bundle.crt: " + c.kubectl("edit", "configmap", c.bundleObject())
	}
	switch {
	case cm != nil && status == fleet.UpdateGone:
		return "cert-manager writes Secret " + c.in.IssuerName + " once Certificate " + cm.Certificate.Namespace + "/" + cm.Certificate.Name + " is Ready: " + c.kubectl("describe", "certificate", cm.Certificate.Name) + " says why it is not"
	case cm != nil:
		return "cert-manager wrote it: " + c.kubectl("describe", "certificate", cm.Certificate.Name) + " shows what it issued and why; meshid-ca signs with the issuer in force until a valid one arrives"
	case status == fleet.UpdateGone:
		return "put a valid issuer (issuer.crt, issuer.key) back: " + c.replaceIssuer()
	case status == fleet.UpdateHeldBack:
		return "it is taken once the bundle holds its anchor and it is valid (check the clocks); to replace the anchor, run " + c.rotate(false) + "; else put an issuer from the bundle's anchors in it: " + c.replaceIssuer()
	}
	return "put a valid issuer in it (a CA certificate inside its validity that chains to an anchor of the bundle, and its key): " + c.replaceIssuer()
}
