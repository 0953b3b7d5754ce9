package anchor_test

import (
	"fmt"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/anchor"
)

// world is the material of one rotation: the old anchor and its issuer,
// the new anchor and an issuer from it, and the bundles in between.
type world struct {
	now time.Time

	oldAnchor, newAnchor, otherAnchor *issuer.KeyPair
	oldIssuer, newIssuer              *issuer.KeyPair
	// expiredIssuer comes from the new anchor and expired an hour ago;
	// expiredOldIssuer from the old one.
	expiredIssuer, expiredOldIssuer *issuer.KeyPair

	old, both, newOnly *bundle.Bundle
	// oldTwo is an old bundle of two anchors (old and other), bothTwo
	// the same with the new anchor added.
	oldTwo, bothTwo *bundle.Bundle
}

var w = newWorld()

func newWorld() *world {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	w := &world{now: now}
	year := 365 * 24 * time.Hour
	w.oldAnchor = must(issuer.NewAnchor(issuer.CAParams{CommonName: "old anchor", NotBefore: now.Add(-year), TTL: 2 * year}))
	w.newAnchor = must(issuer.NewAnchor(issuer.CAParams{CommonName: "new anchor", NotBefore: now.Add(-time.Hour), TTL: 10 * year}))
	w.otherAnchor = must(issuer.NewAnchor(issuer.CAParams{CommonName: "other old anchor", NotBefore: now.Add(-year), TTL: 2 * year}))
	w.oldIssuer = must(w.oldAnchor.NewIntermediate(issuer.CAParams{CommonName: "old issuer", NotBefore: now.Add(-24 * time.Hour), TTL: 30 * 24 * time.Hour, MaxPathLenZero: true}))
	w.newIssuer = must(w.newAnchor.NewIntermediate(issuer.CAParams{CommonName: "new issuer", NotBefore: now.Add(-5 * time.Minute), TTL: 30 * 24 * time.Hour, MaxPathLenZero: true}))
	w.expiredIssuer = must(w.newAnchor.NewIntermediate(issuer.CAParams{CommonName: "expired issuer", NotBefore: now.Add(-49 * time.Hour), TTL: 48 * time.Hour, MaxPathLenZero: true}))
	w.expiredOldIssuer = must(w.oldAnchor.NewIntermediate(issuer.CAParams{CommonName: "expired old issuer", NotBefore: now.Add(-49 * time.Hour), TTL: 48 * time.Hour, MaxPathLenZero: true}))
	w.old = must(bundle.Parse(w.oldAnchor.CertPEM()))
	w.newOnly = must(bundle.Parse(w.newAnchor.CertPEM()))
	w.both = must(bundle.Parse(append(w.old.PEM(), w.newOnly.PEM()...)))
	w.oldTwo = must(bundle.Parse(append(w.old.PEM(), w.otherAnchor.CertPEM()...)))
	w.bothTwo = must(bundle.Parse(append(w.oldTwo.PEM(), w.newOnly.PEM()...)))
	return w
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func keyPEM(kp *issuer.KeyPair) []byte { return must(kp.KeyPEM()) }

func fp12(b *bundle.Bundle) string { return b.SHA256()[:12] }

func anchor12(kp *issuer.KeyPair) string { return kp.Fingerprint()[:12] }

// state is a rotation stored at stage, started a minute ago.
func (w *world) state(stage anchor.Stage, opts ...func(*anchor.State)) *anchor.State {
	st := &anchor.State{
		Stage: stage, Started: w.now.Add(-time.Minute), StageStarted: w.now.Add(-10 * time.Second),
		OldBundle: string(w.old.PEM()), NewAnchor: string(w.newOnly.PEM()), ReissueWindow: 30 * time.Second,
	}
	for _, o := range opts {
		o(st)
	}
	return st
}

func aborting(s *anchor.State)    { s.Aborting = true }
func emergency(s *anchor.State)   { s.Emergency = true }
func certManager(s *anchor.State) { s.CertManager = true }
func recorded(s *anchor.State)    { s.NewIssuerSHA256 = w.newIssuer.Fingerprint() }
func oldTwo(s *anchor.State)      { s.OldBundle = string(w.oldTwo.PEM()) }

// The proxies of the test fleet, and the replica each reports to.
var proxies = []struct{ sa, instance, replica string }{
	{"web", "web-7d4f9", "ca-0"},
	{"db", "db-5c2a1", "ca-0"},
	{"api", "api-9e3b8", "ca-1"},
}

func spiffeID(sa string) string { return "spiffe://cluster.local/ns/shop/sa/" + sa }

// reports is what two CA replicas publish when every proxy holds b with a
// leaf chaining to leafAnchor, and both replicas hold b and sign with iss.
func (w *world) reports(b *bundle.Bundle, iss, leafAnchor *issuer.KeyPair) []fleet.Report {
	reps := []fleet.Report{
		{Replica: "ca-0", Updated: w.now.Add(-time.Second), IssuerSHA256: iss.Fingerprint(), BundleSHA256: b.SHA256()},
		{Replica: "ca-1", Updated: w.now.Add(-time.Second), IssuerSHA256: iss.Fingerprint(), BundleSHA256: b.SHA256()},
	}
	for _, p := range proxies {
		i := map[string]int{"ca-0": 0, "ca-1": 1}[p.replica]
		reps[i].Proxies = append(reps[i].Proxies, fleet.Proxy{
			ID: spiffeID(p.sa), Instance: p.instance, BundleSHA256: b.SHA256(),
			LeafAnchorSHA256: leafAnchor.Fingerprint(), LastSeen: w.now.Add(-2 * time.Second), Heartbeat: fleet.Duration(10 * time.Second),
		})
	}
	return reps
}

// proxy edits the report of the proxy of service account sa.
func proxy(sa string, edit func(*fleet.Proxy)) func([]fleet.Report) {
	return func(reps []fleet.Report) {
		for i := range reps {
			for j := range reps[i].Proxies {
				if reps[i].Proxies[j].ID == spiffeID(sa) {
					edit(&reps[i].Proxies[j])
				}
			}
		}
	}
}

// replica edits the report of replica name.
func replica(name string, edit func(*fleet.Report)) func([]fleet.Report) {
	return func(reps []fleet.Report) {
		for i := range reps {
			if reps[i].Replica == name {
				edit(&reps[i])
			}
		}
	}
}

// view merges reports (after edits) as the rotator does.
func (w *world) view(reps []fleet.Report, edits ...func([]fleet.Report)) fleet.View {
	for _, e := range edits {
		e(reps)
	}
	return fleet.Merge(reps, w.now, 30*time.Second)
}

// observed is the cluster at st: by default the bundle and the issuer from
// before the rotation, a fleet that holds them, and the new anchor's key
// saved.
func (w *world) observed(st *anchor.State, opts ...func(*anchor.Observed)) anchor.Observed {
	o := anchor.Observed{
		Now: w.now, State: st,
		Saved:      anchor.Saved{NewAnchorKey: keyPEM(w.newAnchor)},
		Bundle:     w.old.PEM(),
		IssuerCert: w.oldIssuer.CertPEM(), IssuerKey: keyPEM(w.oldIssuer),
		Fleet:   w.view(w.reports(w.old, w.oldIssuer, w.oldAnchor)),
		Timeout: 10 * time.Minute,
	}
	if st.CertManager {
		o.CertManagerAnchor, o.CertManagerAnchorKey = w.oldAnchor.CertPEM(), keyPEM(w.oldAnchor)
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}

func bundleIs(b *bundle.Bundle, window time.Duration) func(*anchor.Observed) {
	return func(o *anchor.Observed) {
		o.Bundle, o.Window = b.PEM(), ""
		if window > 0 {
			o.Window = window.String()
		}
	}
}

func issuerIs(kp *issuer.KeyPair) func(*anchor.Observed) {
	return func(o *anchor.Observed) { o.IssuerCert, o.IssuerKey = kp.CertPEM(), keyPEM(kp) }
}

func fleetIs(v fleet.View) func(*anchor.Observed) {
	return func(o *anchor.Observed) { o.Fleet = v }
}

func certManagerAnchorIs(kp *issuer.KeyPair) func(*anchor.Observed) {
	return func(o *anchor.Observed) {
		o.CertManagerAnchor, o.CertManagerAnchorKey = bundle.Encode(kp.Certificates()[:1]), keyPEM(kp)
	}
}

func waitingFor(goal string, since time.Duration) func(*anchor.Observed) {
	return func(o *anchor.Observed) { o.Waiting = anchor.Waiting{Goal: goal, Since: o.Now.Add(-since)} }
}

// savedOldIssuer: the issuer from before the switch was backed up.
func savedOldIssuer(kp *issuer.KeyPair) func(*anchor.Observed) {
	return func(o *anchor.Observed) { o.Saved.OldIssuerCert, o.Saved.OldIssuerKey = kp.CertPEM(), keyPEM(kp) }
}

// savedOldAnchor: cert-manager's anchor from before the switch was backed up.
func savedOldAnchor(o *anchor.Observed) {
	o.Saved.OldAnchorCert, o.Saved.OldAnchorKey = w.oldAnchor.CertPEM(), keyPEM(w.oldAnchor)
}

func askedCertManager(o *anchor.Observed) { o.AskedCertManager = true }

func (w *world) goalBundle(b *bundle.Bundle) string { return "bundle " + fp12(b) }
func (w *world) goalIssuer(a *issuer.KeyPair) string {
	return fmt.Sprintf("the issuer from anchor %s (CA replicas)", anchor12(a))
}
func (w *world) goalLeaves(a *issuer.KeyPair) string { return "leaves from anchor " + anchor12(a) }
