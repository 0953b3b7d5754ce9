package health

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
)

// anchorInfo is one anchor of the bundle in force.
type anchorInfo struct {
	sha      string
	notAfter time.Time
	cert     *x509.Certificate // nil when only reported (not in the ConfigMap)
}

// inForce is one issuer the replicas sign with, or the Secret's when no
// replica reports.
type inForce struct {
	sha      string
	info     *fleet.Issuer // nil when the replica does not say more
	replicas []string      // empty: the Secret's, no replica reports
	// kp is the Secret's issuer when it is this one.
	kp *issuer.KeyPair
}

// read parses the objects and works out what is in force.
func (c *checker) read() {
	in := c.in
	switch {
	case c.skipped(NeedBundle) != "":
		c.cmErr = errors.New(c.skipped(NeedBundle))
	case in.BundleErr != nil:
		c.cmErr = in.BundleErr
	default:
		c.cmBundle, c.cmErr = bundle.Parse(in.BundlePEM)
	}
	switch {
	case c.skipped(NeedIssuer) != "":
		c.secretErr = errors.New(c.skipped(NeedIssuer))
	case in.IssuerErr != nil:
		c.secretErr = in.IssuerErr
	default:
		c.secret, c.secretErr = issuer.Parse(in.IssuerCert, in.IssuerKey)
	}
	if rs := in.Reports; rs != nil && rs.Err == nil && c.skipped(NeedReports) == "" {
		for _, r := range rs.All {
			if in.Now.Sub(r.Updated) <= fleet.StaleAfter {
				c.live = append(c.live, r)
			}
		}
		slices.SortFunc(c.live, func(a, b fleet.Report) int { return strings.Compare(a.Replica, b.Replica) })
		c.view = fleet.Merge(c.live, in.Now, fleet.StaleAfter)
	}
	if len(c.live) > 0 {
		c.inForceFromReports()
	} else {
		c.inForceFromObjects()
	}
	if c.cmBundle != nil {
		for _, p := range in.Proxies {
			if len(p.Chain) == 0 || p.Err != nil {
				continue
			}
			if _, chains, err := x509svid.Verify(p.Chain, c.cmBundle.X509Bundle(in.TrustDomain), x509svid.WithTime(in.Now)); err == nil {
				top := chains[0][len(chains[0])-1]
				c.proxyAnchors[bundle.Fingerprint(top)] = append(c.proxyAnchors[bundle.Fingerprint(top)], "proxy "+p.Addr)
			}
		}
	}
}

// inForceFromReports takes the bundle most replicas hold and every issuer
// they sign with.
func (c *checker) inForceFromReports() {
	count := map[string]int{}
	for _, r := range c.live {
		if r.BundleSHA256 != "" {
			count[r.BundleSHA256]++
		}
	}
	var from *fleet.Report
	for i, r := range c.live {
		if r.BundleSHA256 != "" && (from == nil || count[r.BundleSHA256] > count[from.BundleSHA256]) {
			from = &c.live[i]
		}
	}
	if from != nil {
		c.bundleSHA = from.BundleSHA256
		for _, a := range from.Anchors {
			ai := anchorInfo{sha: a.SHA256, notAfter: a.NotAfter}
			if c.cmBundle != nil {
				for _, cert := range c.cmBundle.Anchors() {
					if bundle.Fingerprint(cert) == a.SHA256 {
						ai.cert = cert
					}
				}
			}
			c.anchors = append(c.anchors, ai)
		}
	}
	for _, r := range c.live {
		if r.IssuerSHA256 == "" {
			continue
		}
		i := slices.IndexFunc(c.issuers, func(f inForce) bool { return f.sha == r.IssuerSHA256 })
		if i < 0 {
			f := inForce{sha: r.IssuerSHA256, info: r.Issuer}
			if c.secret != nil && c.secret.Fingerprint() == f.sha {
				f.kp = c.secret
			}
			c.issuers = append(c.issuers, f)
			i = len(c.issuers) - 1
		}
		c.issuers[i].replicas = append(c.issuers[i].replicas, r.Replica)
	}
}

// inForceFromObjects takes the ConfigMap's bundle and the Secret's issuer:
// no replica says what it has in force.
func (c *checker) inForceFromObjects() {
	if c.cmBundle != nil {
		c.bundleSHA = c.cmBundle.SHA256()
		for _, a := range c.cmBundle.Anchors() {
			c.anchors = append(c.anchors, anchorInfo{sha: bundle.Fingerprint(a), notAfter: a.NotAfter, cert: a})
		}
	}
	if c.secret == nil || c.cmBundle == nil {
		return
	}
	f := inForce{sha: c.secret.Fingerprint(), kp: c.secret}
	expiry, _ := c.secret.ChainExpiry(c.cmBundle, c.in.Now) // zero when it does not verify: the issuer row says why
	info := &fleet.Issuer{Subject: c.secret.Cert.Subject.String(), NotBefore: c.secret.Cert.NotBefore, NotAfter: c.secret.NotAfter(), ChainNotAfter: expiry}
	if a := anchorOf(c.secret, c.cmBundle); a != nil {
		info.AnchorSHA256 = bundle.Fingerprint(a)
	}
	f.info = info
	c.issuers = append(c.issuers, f)
}

// anchorOf returns the anchor of b that signed the top of kp's chain, valid
// or not; nil when none did.
func anchorOf(kp *issuer.KeyPair, b *bundle.Bundle) *x509.Certificate {
	certs := kp.Certificates()
	top := certs[len(certs)-1]
	for _, a := range b.Anchors() {
		if bytes.Equal(top.RawIssuer, a.RawSubject) && top.CheckSignatureFrom(a) == nil {
			return a
		}
	}
	return nil
}

// fromReports reports whether the trust rows describe what the replicas
// have in force (else the objects).
func (c *checker) fromReports() bool { return len(c.live) > 0 }

func (c *checker) bundleRows() {
	name := "bundle " + c.in.BundleName
	if why := c.skipped(NeedBundle); why != "" && !c.fromReports() {
		c.add(Row{Check: name, Status: Skip, Detail: why})
		return
	}
	if !c.fromReports() {
		switch {
		case c.in.BundleErr != nil:
			c.add(Row{Check: name, Status: Fail, Detail: c.cmErr.Error(), Hint: c.createBundleHint()})
			return
		case c.cmBundle == nil:
			c.add(Row{Check: name, Status: Fail, Detail: c.cmErr.Error(), Hint: "put PEM CA certificates only under key ca-bundle.crt; meshid-ca keeps the last good bundle meanwhile"})
			return
		}
		c.add(Row{Check: name, Status: OK, Detail: fmt.Sprintf("%d anchor(s), sha256 %s (from the ConfigMap: no meshid-ca replica reports what it has in force)", len(c.cmBundle.Anchors()), short(c.bundleSHA))})
	} else {
		c.add(c.bundleInForce(name))
		if row, ok := c.update("bundle", "bundle update "+c.in.BundleName); ok {
			c.add(row)
		}
	}
	c.anchorRows()
}

func (c *checker) createBundleHint() string {
	return "create it with " + c.kubectl("create", "configmap", c.bundleObject(), "--from-file=ca-bundle.crt=anchors.pem") +
		" (the PEM anchors), or install meshid with " + c.meshid("install", "--apply") + ", or name it with check's --trust-bundle"
}

// bundleInForce is the bundle row from the replicas' reports.
func (c *checker) bundleInForce(name string) Row {
	row := Row{Check: name}
	by := map[string][]string{}
	var none []string
	for _, r := range c.live {
		if r.BundleSHA256 == "" {
			none = append(none, r.Replica)
			continue
		}
		by[r.BundleSHA256] = append(by[r.BundleSHA256], r.Replica)
	}
	total := len(c.anchors)
	for _, r := range c.live {
		if r.BundleSHA256 == c.bundleSHA && r.AnchorsTotal > total {
			total = r.AnchorsTotal
		}
	}
	switch {
	case len(none) > 0:
		row.Status, row.Detail = Fail, fmt.Sprintf("replica %s has no bundle in force: it cannot sign", strings.Join(none, ", "))
		row.Hint = "see the bundle update row, and meshid-ca's log: " + c.kubectl("logs", "deployment/"+c.deployment())
	case len(by) > 1:
		var parts []string
		for sha, rs := range by {
			parts = append(parts, fmt.Sprintf("%s on %s", short(sha), strings.Join(rs, ", ")))
		}
		slices.Sort(parts)
		row.Status, row.Detail = Warn, "the replicas hold different bundles: "+strings.Join(parts, "; ")
		row.Hint = "a replica has not loaded the latest bundle yet; if this lasts, see its log: " + c.kubectl("logs", "deployment/"+c.deployment())
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("in force on %d of %d replicas: %d anchor(s), sha256 %s", len(by[c.bundleSHA]), len(c.live), total, short(c.bundleSHA))
	}
	return row
}

func (c *checker) anchorRows() {
	for i, a := range c.anchors {
		name := fmt.Sprintf("anchor %d (%s)", i, short(a.sha))
		if a.cert != nil && a.cert.Subject.CommonName != "" {
			name = fmt.Sprintf("anchor %d %s (%s)", i, a.cert.Subject.CommonName, short(a.sha))
		}
		t := a.notAfter
		row := Row{Check: name, Expires: &t}
		users := c.usedBy(a.sha)
		used := len(users) > 0
		use := "used by " + strings.Join(users, ", ")
		if !used {
			use = c.unused()
		}
		left := a.notAfter.Sub(c.in.Now)
		switch {
		case c.in.Now.After(a.notAfter) && used:
			row.Status, row.Detail = Fail, fmt.Sprintf("expired at %s; %s: nothing it signed verifies any more", stamp(a.notAfter), use)
			row.Hint = "replace the anchor and the issuer at once: " + c.rotate(true)
		case c.in.Now.After(a.notAfter):
			// Expired is a failure even when nothing uses it (as `linkerd
			// check` has it): the bundle carries dead material to every
			// proxy. The detail says no traffic depends on it, and it is
			// not counted in the time to outage.
			row.Status, row.Detail = Fail, fmt.Sprintf("expired at %s; %s, so no traffic depends on it", stamp(a.notAfter), use)
			row.Hint = c.removeAnchor(a.sha)
		case a.cert != nil && c.in.Now.Before(a.cert.NotBefore):
			row.Status, row.Detail = Fail, "not valid before "+stamp(a.cert.NotBefore)
			row.Hint = "check the clocks, or the anchor's NotBefore"
		case left < c.in.WarnWithin && used:
			row.Status, row.Detail = Warn, fmt.Sprintf("expires in %s, within the %s warning window; %s", days(left), days(c.in.WarnWithin), use)
			row.Hint = "rotate it now, with no downtime: " + c.rotate(false)
		case left < c.in.WarnWithin:
			row.Status, row.Detail = Warn, fmt.Sprintf("expires in %s, within the %s warning window; %s", days(left), days(c.in.WarnWithin), use)
			row.Hint = c.removeAnchor(a.sha)
		default:
			row.Status, row.Detail = OK, fmt.Sprintf("CA, valid for %s more; %s", days(left), use)
		}
		c.add(row)
		if used {
			c.expires(name, a.notAfter)
		}
	}
}

// usedBy names what chains to the anchor sha.
func (c *checker) usedBy(sha string) []string {
	var by []string
	for _, f := range c.issuers {
		if f.info != nil && f.info.AnchorSHA256 == sha {
			by = append(by, c.issuerLabel(f))
		}
	}
	n := 0
	for _, p := range c.view.Proxies {
		if !p.OverCap && p.LeafAnchorSHA256 == sha {
			n++
		}
	}
	if n > 0 {
		by = append(by, fmt.Sprintf("%d reported proxies' certificates", n))
	}
	return append(by, c.proxyAnchors[sha]...)
}

// unused says why nothing uses an anchor.
func (c *checker) unused() string {
	s := "nothing uses it"
	var to []string
	for _, f := range c.issuers {
		if f.info != nil && f.info.AnchorSHA256 != "" {
			to = append(to, short(f.info.AnchorSHA256))
		}
	}
	if len(to) > 0 {
		s += " (the issuer chains to anchor " + strings.Join(uniq(to), ", ")
	} else {
		s += " (no issuer is known to chain to it"
	}
	if c.fromReports() {
		s += "; no reported proxy's certificate chains to it)"
	} else {
		s += "; no replica reports what the proxies' certificates chain to)"
	}
	return s
}

func (c *checker) issuerLabel(f inForce) string {
	if len(f.replicas) == 0 {
		return "the issuer in the Secret"
	}
	if len(c.issuers) > 1 {
		return "the issuer in force on " + strings.Join(f.replicas, ", ")
	}
	return "the issuer in force"
}

func (c *checker) removeAnchor(sha string) string {
	return "remove it from the bundle: " + c.kubectl("edit", "configmap", c.bundleObject()) + " and delete the certificate whose SHA-256 is " + sha
}

// rotate is the rotate-anchor command: a staged rotation, or an emergency.
func (c *checker) rotate(emergency bool) string {
	args := []string{"rotate-anchor", "start"}
	if emergency {
		args = append(args, "--emergency")
	}
	args = append(args, "--generate", "--write-anchor-key", "new-anchor.key")
	if c.in.CertManager != nil {
		args = append(args, "--cert-manager")
	}
	return c.meshid(args...)
}

func (c *checker) issuerRows() {
	name := "issuer " + c.in.IssuerName
	if !c.fromReports() {
		c.add(c.issuerFromSecret(name))
		return
	}
	var none []string
	for _, r := range c.live {
		if r.IssuerSHA256 == "" {
			none = append(none, r.Replica)
		}
	}
	if len(none) > 0 {
		c.add(Row{Check: name, Status: Fail, Detail: fmt.Sprintf("replica %s has no issuer in force: it cannot sign certificates", strings.Join(none, ", ")),
			Hint: "see the issuer update row; " + c.kubectl("logs", "deployment/"+c.deployment()) + " says why"})
	}
	for _, f := range c.issuers {
		c.add(c.issuerInForce(name, f))
	}
	if row, ok := c.update("issuer", "issuer update "+c.in.IssuerName); ok {
		c.add(row)
	}
	c.upstreamRows()
}

// threshold is how long before its expiry an issuer should have been
// renewed.
func (c *checker) threshold(notBefore, notAfter time.Time) time.Duration {
	switch {
	case c.in.IssuerWarnWithin != 0:
		return c.in.IssuerWarnWithin
	case c.in.IssuerRenewBefore != 0:
		return c.in.IssuerRenewBefore
	}
	return notAfter.Sub(notBefore) / 3
}

func (c *checker) renewHint() string {
	if c.upstream() {
		return "the replicas renew it from their upstream at half of its life: the upstream rows say why they have not"
	}
	if cm := c.in.CertManager; cm != nil {
		return "it should have been renewed by now: " + c.kubectl("describe", "certificate", cm.Certificate.Name) + " says why cert-manager has not"
	}
	return "it should have been renewed by now: put a new one in the Secret, " + c.replaceIssuer()
}

// replaceIssuer is the command that puts issuer.crt and issuer.key in the
// issuer Secret.
func (c *checker) replaceIssuer() string {
	return c.pipeApply(c.kubectl("create", "secret", "tls", c.issuerObject(), "--cert=issuer.crt", "--key=issuer.key", "--dry-run=client", "-o", "yaml"))
}

// issuerFromSecret is the issuer row when no replica reports: the Secret.
func (c *checker) issuerFromSecret(name string) Row {
	if why := c.skipped(NeedIssuer); why != "" {
		return Row{Check: name, Status: Skip, Detail: why}
	}
	if c.in.IssuerErr != nil {
		hint := "create it: " + c.kubectl("create", "secret", "tls", c.issuerObject(), "--cert=issuer.crt", "--key=issuer.key") + ", or install meshid with " + c.meshid("install", "--apply")
		if cm := c.in.CertManager; cm != nil {
			hint = "cert-manager writes it once Certificate " + cm.Certificate.Namespace + "/" + cm.Certificate.Name + " is Ready: see the cert-manager rows"
		}
		return Row{Check: name, Status: Fail, Detail: c.secretErr.Error(), Hint: hint}
	}
	if c.secret == nil {
		return Row{Check: name, Status: Fail, Detail: c.secretErr.Error(), Hint: "tls.crt must be a CA certificate (issuer first) and tls.key its key"}
	}
	kp := c.secret
	t := kp.NotAfter()
	row := Row{Check: name, Expires: &t}
	left := t.Sub(c.in.Now)
	threshold := c.threshold(kp.Cert.NotBefore, kp.Cert.NotAfter)
	var verr error
	if c.cmBundle != nil {
		verr = kp.Verify(c.cmBundle, c.in.Now)
	}
	var anchor *x509.Certificate
	if c.cmBundle != nil {
		anchor = anchorOf(kp, c.cmBundle)
	}
	switch {
	case c.cmBundle == nil:
		row.Status, row.Detail, row.Hint = Fail, "cannot be checked without a trust bundle", "fix the bundle first"
	case errors.Is(verr, issuer.ErrUntrusted) && anchor != nil && c.in.Now.After(anchor.NotAfter):
		row.Status, row.Detail = Fail, fmt.Sprintf("its anchor %s expired at %s: certificates it signs do not verify", short(bundle.Fingerprint(anchor)), stamp(anchor.NotAfter))
		row.Hint = "replace the anchor and the issuer at once: " + c.rotate(true)
	case errors.Is(verr, issuer.ErrUntrusted):
		row.Status, row.Detail = Fail, "does not chain to any anchor of the bundle (an issuer from another anchor)"
		row.Hint = "certificates it signs will not verify: issue it from an anchor in the bundle, or add its anchor to the bundle first"
	case verr != nil:
		row.Status, row.Detail, row.Hint = Fail, verr.Error(), "install a valid issuer; meshid-ca keeps the last good one meanwhile"
	case left < threshold:
		row.Status, row.Detail, row.Hint = Fail, fmt.Sprintf("expires in %s, within %s", days(left), days(threshold)), c.renewHint()
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("CA, key matches, chains to the bundle, valid for %s more (from the Secret: no meshid-ca replica reports what it has in force)", days(left))
	}
	c.expires(name+" from the Secret", t)
	if verr == nil && c.cmBundle != nil {
		c.outageOfIssuer(name+" from the Secret", c.issuers[0].info)
	}
	return row
}

// issuerInForce is the row of one issuer the replicas sign with.
func (c *checker) issuerInForce(name string, f inForce) Row {
	row := Row{Check: name}
	on := fmt.Sprintf("in force on %d of %d replicas", len(f.replicas), len(c.live))
	if len(c.issuers) > 1 {
		on = "in force on " + strings.Join(f.replicas, ", ")
	}
	info := f.info
	if info == nil && f.kp != nil {
		info = &fleet.Issuer{Subject: f.kp.Cert.Subject.String(), NotBefore: f.kp.Cert.NotBefore, NotAfter: f.kp.NotAfter()}
	}
	if info == nil {
		row.Status, row.Detail = Warn, fmt.Sprintf("%s: sha256 %s; the replicas do not say more (a meshid-ca older than this meshid)", on, short(f.sha))
		row.Hint = "upgrade meshid-ca, or run this meshid's version of it"
		return row
	}
	t := info.NotAfter
	if !info.ChainNotAfter.IsZero() && info.ChainNotAfter.Before(t) {
		t = info.ChainNotAfter
	}
	row.Expires = &t
	left := info.NotAfter.Sub(c.in.Now)
	threshold := c.threshold(info.NotBefore, info.NotAfter)
	what := fmt.Sprintf("%s: %s, sha256 %s", on, info.Subject, short(f.sha))
	switch {
	case c.in.Now.After(info.NotAfter):
		row.Status, row.Detail = Fail, fmt.Sprintf("%s, expired at %s: the CA cannot sign", what, stamp(info.NotAfter))
		row.Hint = "put a valid issuer in the Secret: " + c.replaceIssuer()
		if c.upstream() {
			row.Hint = c.renewHint()
		}
	case info.ChainNotAfter.IsZero() || info.AnchorSHA256 == "":
		row.Status, row.Detail = Fail, what+", does not chain to the bundle in force: certificates it signs do not verify"
		row.Hint = "issue it from an anchor of the bundle, or add its anchor to the bundle: see the bundle and issuer update rows"
	case c.in.Now.After(info.ChainNotAfter):
		row.Status, row.Detail = Fail, fmt.Sprintf("%s, its chain expired at %s: certificates it signs do not verify", what, stamp(info.ChainNotAfter))
		row.Hint = "replace the anchor and the issuer at once: " + c.rotate(true)
	case len(c.issuers) > 1 && !c.upstream():
		row.Status, row.Detail = Warn, fmt.Sprintf("%s, chains to anchor %s, valid for %s more; the replicas sign with %d issuers", what, short(info.AnchorSHA256), days(left), len(c.issuers))
		row.Hint = "a replica has not loaded the latest issuer yet; if this lasts, see its log: " + c.kubectl("logs", "deployment/"+c.deployment())
	case left < threshold:
		row.Status, row.Detail, row.Hint = Fail, fmt.Sprintf("%s, expires in %s, within %s", what, days(left), days(threshold)), c.renewHint()
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("%s, chains to anchor %s, valid for %s more", what, short(info.AnchorSHA256), days(left))
	}
	c.outageOfIssuer(name+" in force", info)
	return row
}

// outageOfIssuer counts the issuer and its chain towards the time to
// outage, under what.
func (c *checker) outageOfIssuer(what string, info *fleet.Issuer) {
	c.expires(what, info.NotAfter)
	if !info.ChainNotAfter.IsZero() && info.ChainNotAfter.Before(info.NotAfter) {
		c.expires(what+": its chain, anchor "+short(info.AnchorSHA256), info.ChainNotAfter)
	}
}

// deployment is meshid-ca's Deployment name, for hints.
func (c *checker) deployment() string {
	if c.in.CA != nil {
		return objectName("", c.in.CA.Name)
	}
	return "meshid-ca"
}
