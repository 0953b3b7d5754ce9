package anchor_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/anchor"
)

// want is what a test expects of a Decision. Intro and Met are always
// compared (they are printed lines); the rest by kind.
type want struct {
	kind   anchor.Kind
	action anchor.Action // Act
	stage  anchor.Stage  // Advance
	goal   string        // Wait, and Fail after a wait
	text   string        // in the Message (Wait) or the error (Fail)
	reason anchor.Reason // Fail
	intro  string
	met    []string
	// deadline, when set, is the Wait's deadline.
	deadline time.Time
}

func notFound(name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

var (
	introAdd       = fmt.Sprintf("stage Add: publishing the bundle with both anchors (%s)", fp12(w.both))
	introEmergency = "stage SwitchIssuer (emergency): publishing the new anchor alone, at once"
	introReissue   = "stage Reissue: proxies renew from the new issuer within 30s"
	introRemove    = fmt.Sprintf("stage Remove: publishing the new anchor alone (%s)", fp12(w.newOnly))
	introRestore   = "abort: restoring the issuer from the old anchor"
	introOldBack   = fmt.Sprintf("abort: publishing the old bundle (%s)", fp12(w.old))
)

func TestNext(t *testing.T) {
	// Fleets: who holds what.
	onOld := w.reports(w.old, w.oldIssuer, w.oldAnchor)
	_ = onOld
	onBoth := func() []fleet.Report { return w.reports(w.both, w.oldIssuer, w.oldAnchor) }
	onBothNewIssuer := func() []fleet.Report { return w.reports(w.both, w.newIssuer, w.oldAnchor) }
	onBothNewLeaves := func() []fleet.Report { return w.reports(w.both, w.newIssuer, w.newAnchor) }
	onNew := func() []fleet.Report { return w.reports(w.newOnly, w.newIssuer, w.newAnchor) }
	onOldAgain := func() []fleet.Report { return w.reports(w.old, w.oldIssuer, w.oldAnchor) }
	bundleOf := func(b string) func(*fleet.Proxy) { return func(p *fleet.Proxy) { p.BundleSHA256 = b } }
	leafFrom := func(a *issuer.KeyPair) func(*fleet.Proxy) {
		return func(p *fleet.Proxy) { p.LeafAnchorSHA256 = a.Fingerprint() }
	}
	newIssuerAt := func(st *anchor.State) *anchor.State { recorded(st); return st }

	tests := []struct {
		name string
		obs  anchor.Observed
		want want
	}{
		// Add.
		{
			name: "add: publishes the bundle with both anchors",
			obs:  w.observed(w.state(anchor.Add)),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.both.PEM()}, intro: introAdd},
		},
		{
			name: "add: a re-issue window left in the bundle ConfigMap is removed",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, time.Minute)),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.both.PEM()}, intro: introAdd},
		},
		{
			name: "add: resumed after publishing, nobody has it yet",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0)),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, deadline: w.now.Add(10 * time.Minute),
				text: fmt.Sprintf("0/5 converged on bundle %s; waiting for %s (api-9e3b)", fp12(w.both), spiffeID("api"))},
		},
		{
			name: "add: a proxy whose report names the old bundle holds it",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), proxy("db", bundleOf(w.old.SHA256()))))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd,
				text: fmt.Sprintf("4/5 converged on bundle %s; waiting for %s (db-5c2a1)", fp12(w.both), spiffeID("db"))},
		},
		{
			name: "add: a stand-in for proxies refused over a cap holds it, whatever it says it holds",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), proxy("db", func(p *fleet.Proxy) { p.OverCap = true })))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd,
				text: fmt.Sprintf("4/5 converged on bundle %s; waiting for proxies of %s refused by a CA replica over its cap", fp12(w.both), spiffeID("db"))},
		},
		{
			name: "add: a CA replica that has not loaded it holds it",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), replica("ca-1", func(r *fleet.Report) { r.BundleSHA256 = w.old.SHA256() })))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, text: "4/5 converged on bundle " + fp12(w.both) + "; waiting for CA replica ca-1"},
		},
		{
			name: "add: a silent proxy is named as cut off",
			obs: w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), proxy("web", func(p *fleet.Proxy) {
				p.BundleSHA256, p.LastSeen = w.old.SHA256(), w.now.Add(-45*time.Second)
			})))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, text: spiffeID("web") + " (web-7d4f) silent for 45s: cut off from the CA?"},
		},
		{
			name: "add: a replica silent for over 30 s is dead and holds nothing back",
			obs: w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), replica("ca-1", func(r *fleet.Report) {
				r.Updated, r.BundleSHA256 = w.now.Add(-31*time.Second), w.old.SHA256()
			})))),
			want: want{kind: anchor.Advance, stage: anchor.SwitchIssuer, intro: introAdd, met: []string{w.goalBundle(w.both)}},
		},
		{
			name: "add: no CA replica reports",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(fleet.View{At: w.now})),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, text: "no CA replica has published a fleet report"},
		},
		{
			name: "add: converged, but meshid check fails (no issuer)",
			obs: w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth())), func(o *anchor.Observed) {
				o.IssuerCert, o.IssuerKey, o.IssuerErr = nil, nil, notFound("meshid-issuer")
			}),
			want: want{kind: anchor.Fail, reason: anchor.ReasonCheck, intro: introAdd, met: []string{w.goalBundle(w.both)}, text: "anchor: meshid check fails: "},
		},
		{
			name: "add: converged -> SwitchIssuer",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), fleetIs(w.view(onBoth()))),
			want: want{kind: anchor.Advance, stage: anchor.SwitchIssuer, intro: introAdd, met: []string{w.goalBundle(w.both)}},
		},
		{
			name: "add: stage timeout after waiting that long",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), waitingFor(w.goalBundle(w.both), 10*time.Minute)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonTimeout, goal: w.goalBundle(w.both), intro: introAdd,
				text: "anchor: stage Add did not converge within 10m0s: 0/5 converged on bundle " + fp12(w.both) + "; waiting for"},
		},
		{
			name: "add: a wait runs from when this goal was first awaited",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), waitingFor(w.goalBundle(w.both), 4*time.Minute)),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, deadline: w.now.Add(6 * time.Minute), text: "0/5 converged"},
		},
		{
			name: "add: waiting long for another goal is no timeout",
			obs:  w.observed(w.state(anchor.Add), bundleIs(w.both, 0), waitingFor("something else", time.Hour)),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.both), intro: introAdd, deadline: w.now.Add(10 * time.Minute), text: "0/5 converged"},
		},

		// SwitchIssuer, Secret mode.
		{
			name: "switch: saves the issuer in place first",
			obs:  w.observed(w.state(anchor.SwitchIssuer), bundleIs(w.both, 0), fleetIs(w.view(onBoth()))),
			want: want{kind: anchor.Act, action: anchor.BackupIssuer{Cert: w.oldIssuer.CertPEM(), Key: keyPEM(w.oldIssuer)}},
		},
		{
			name: "switch: writes an issuer from the new anchor, as long-lived as the old one",
			obs:  w.observed(w.state(anchor.SwitchIssuer), bundleIs(w.both, 0), fleetIs(w.view(onBoth())), savedOldIssuer(w.oldIssuer)),
			want: want{kind: anchor.Act, action: anchor.WriteIssuer{AnchorCert: w.newOnly.PEM(), AnchorKey: keyPEM(w.newAnchor), NotBefore: w.now.Add(-5 * time.Minute), TTL: 30 * 24 * time.Hour}},
		},
		{
			name: "switch: an issuer TTL under a day gets 48 h",
			obs: w.observed(w.state(anchor.SwitchIssuer), bundleIs(w.both, 0), savedOldIssuer(w.oldIssuer), func(o *anchor.Observed) {
				o.IssuerTTL = time.Hour
			}),
			want: want{kind: anchor.Act, action: anchor.WriteIssuer{AnchorCert: w.newOnly.PEM(), AnchorKey: keyPEM(w.newAnchor), NotBefore: w.now.Add(-5 * time.Minute), TTL: 48 * time.Hour}},
		},
		{
			name: "switch: the new anchor's key is gone",
			obs:  w.observed(w.state(anchor.SwitchIssuer), bundleIs(w.both, 0), savedOldIssuer(w.oldIssuer), func(o *anchor.Observed) { o.Saved.NewAnchorKey = nil }),
			want: want{kind: anchor.Fail, reason: anchor.ReasonState, text: "anchor: issuer: invalid issuer"},
		},
		{
			name: "switch: resumed after writing the issuer: records it, writes no other",
			obs:  w.observed(w.state(anchor.SwitchIssuer), bundleIs(w.both, 0), issuerIs(w.newIssuer), fleetIs(w.view(onBoth()))),
			want: want{kind: anchor.Act, action: anchor.RecordIssuer{SHA256: w.newIssuer.Fingerprint()}},
		},
		{
			name: "switch: a CA replica still signs with the old issuer",
			obs: w.observed(newIssuerAt(w.state(anchor.SwitchIssuer)), bundleIs(w.both, 0), issuerIs(w.newIssuer),
				fleetIs(w.view(onBothNewIssuer(), replica("ca-1", func(r *fleet.Report) { r.IssuerSHA256 = w.oldIssuer.Fingerprint() })))),
			want: want{kind: anchor.Wait, goal: w.goalIssuer(w.newAnchor), text: "4/5 converged on " + w.goalIssuer(w.newAnchor) + "; waiting for CA replica ca-1"},
		},
		{
			name: "switch: a proxy that lost the two-anchor bundle holds it",
			obs: w.observed(newIssuerAt(w.state(anchor.SwitchIssuer)), bundleIs(w.both, 0), issuerIs(w.newIssuer),
				fleetIs(w.view(onBothNewIssuer(), proxy("web", bundleOf(w.old.SHA256()))))),
			want: want{kind: anchor.Wait, goal: w.goalIssuer(w.newAnchor), text: "waiting for " + spiffeID("web")},
		},
		{
			name: "switch: every replica signs with it -> Reissue",
			obs:  w.observed(newIssuerAt(w.state(anchor.SwitchIssuer)), bundleIs(w.both, 0), issuerIs(w.newIssuer), fleetIs(w.view(onBothNewIssuer()))),
			want: want{kind: anchor.Advance, stage: anchor.Reissue, met: []string{w.goalIssuer(w.newAnchor)}},
		},

		// SwitchIssuer, cert-manager mode.
		{
			name: "cert-manager: saves its anchor first",
			obs:  w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), fleetIs(w.view(onBoth()))),
			want: want{kind: anchor.Act, action: anchor.BackupCertManagerAnchor{Cert: w.oldAnchor.CertPEM(), Key: keyPEM(w.oldAnchor)}},
		},
		{
			name: "cert-manager: gives it the new anchor",
			obs:  w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor),
			want: want{kind: anchor.Act, action: anchor.GiveCertManagerAnchor{Cert: w.newOnly.PEM(), Key: keyPEM(w.newAnchor)}},
		},
		{
			name: "cert-manager: asks it to re-issue",
			obs:  w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor, certManagerAnchorIs(w.newAnchor)),
			want: want{kind: anchor.Act, action: anchor.AskCertManager{}},
		},
		{
			name: "cert-manager: resumed after asking: asks again (this run has not)",
			obs: w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor, certManagerAnchorIs(w.newAnchor), func(o *anchor.Observed) {
				o.IssuerCert, o.IssuerKey, o.IssuerErr = nil, nil, notFound("meshid-issuer")
			}),
			want: want{kind: anchor.Act, action: anchor.AskCertManager{}},
		},
		{
			name: "cert-manager: waits for the re-issue without a word",
			obs: w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor, certManagerAnchorIs(w.newAnchor), askedCertManager, func(o *anchor.Observed) {
				o.IssuerCert, o.IssuerKey, o.IssuerErr = nil, nil, notFound("meshid-issuer")
			}),
			want: want{kind: anchor.Wait, goal: "cert-manager re-issuing meshid-issuer"},
		},
		{
			name: "cert-manager: a re-issue that does not come times out",
			obs: w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor, certManagerAnchorIs(w.newAnchor), askedCertManager,
				waitingFor("cert-manager re-issuing meshid-issuer", 11*time.Minute)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonCertManager, goal: "cert-manager re-issuing meshid-issuer",
				text: "anchor: cert-manager did not re-issue meshid-issuer from the anchor within 10m0s: check the Certificate's status"},
		},
		{
			name: "cert-manager: its anchor Secret cannot be read",
			obs: w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), func(o *anchor.Observed) {
				o.CertManagerAnchor, o.CertManagerAnchorKey, o.CertManagerAnchorErr = nil, nil, notFound("meshid-anchor")
			}),
			want: want{kind: anchor.Fail, reason: anchor.ReasonCertManager, text: "anchor: cert-manager's anchor Secret meshid-anchor: "},
		},
		{
			name: "cert-manager: re-issued from the new anchor: recorded",
			obs:  w.observed(w.state(anchor.SwitchIssuer, certManager), bundleIs(w.both, 0), savedOldAnchor, certManagerAnchorIs(w.newAnchor), askedCertManager, issuerIs(w.newIssuer)),
			want: want{kind: anchor.Act, action: anchor.RecordIssuer{SHA256: w.newIssuer.Fingerprint()}},
		},

		// Emergency.
		{
			name: "emergency: publishes the new anchor alone with the re-issue window",
			obs:  w.observed(w.state(anchor.SwitchIssuer, emergency)),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.newOnly.PEM(), Window: 30 * time.Second}, intro: introEmergency},
		},
		{
			name: "emergency: with no old bundle to read",
			obs:  w.observed(w.state(anchor.SwitchIssuer, emergency, func(s *anchor.State) { s.OldBundle = "" }), func(o *anchor.Observed) { o.Bundle, o.BundleErr = nil, errors.New("gone") }),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.newOnly.PEM(), Window: 30 * time.Second}, intro: introEmergency},
		},
		{
			name: "emergency: then writes an issuer from the new anchor",
			obs:  w.observed(w.state(anchor.SwitchIssuer, emergency), bundleIs(w.newOnly, 30*time.Second), issuerIs(w.expiredOldIssuer), savedOldIssuer(w.expiredOldIssuer)),
			want: want{kind: anchor.Act, action: anchor.WriteIssuer{AnchorCert: w.newOnly.PEM(), AnchorKey: keyPEM(w.newAnchor), NotBefore: w.now.Add(-5 * time.Minute), TTL: 48 * time.Hour}, intro: introEmergency},
		},
		{
			name: "emergency: every replica signs from the new anchor alone -> Reissue",
			obs: w.observed(newIssuerAt(w.state(anchor.SwitchIssuer, emergency)), bundleIs(w.newOnly, 30*time.Second), issuerIs(w.newIssuer),
				fleetIs(w.view(w.reports(w.newOnly, w.newIssuer, w.oldAnchor)))),
			want: want{kind: anchor.Advance, stage: anchor.Reissue, intro: introEmergency, met: []string{w.goalIssuer(w.newAnchor)}},
		},
		{
			name: "emergency: every leaf from the new anchor, window removed -> Done",
			obs:  w.observed(w.state(anchor.Reissue, emergency), bundleIs(w.newOnly, 0), issuerIs(w.newIssuer), fleetIs(w.view(onNew()))),
			want: want{kind: anchor.Advance, stage: anchor.Done, intro: introReissue, met: []string{w.goalLeaves(w.newAnchor)}},
		},
		{
			name: "emergency: Done only when meshid check passes",
			obs:  w.observed(w.state(anchor.Reissue, emergency), bundleIs(w.newOnly, 0), issuerIs(w.expiredIssuer), fleetIs(w.view(onNew()))),
			want: want{kind: anchor.Fail, reason: anchor.ReasonCheck, intro: introReissue, met: []string{w.goalLeaves(w.newAnchor)}, text: "expired"},
		},

		// Reissue.
		{
			name: "reissue: asks proxies to renew within the window",
			obs:  w.observed(newIssuerAt(w.state(anchor.Reissue)), bundleIs(w.both, 0), issuerIs(w.newIssuer), fleetIs(w.view(onBothNewIssuer()))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.both.PEM(), Window: 30 * time.Second}, intro: introReissue},
		},
		{
			name: "reissue: lagging proxies with leaves from the old anchor",
			obs: w.observed(newIssuerAt(w.state(anchor.Reissue)), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer),
				fleetIs(w.view(onBothNewIssuer(), proxy("web", leafFrom(w.newAnchor))))),
			want: want{kind: anchor.Wait, goal: w.goalLeaves(w.newAnchor), intro: introReissue,
				text: fmt.Sprintf("1/3 converged on leaves from anchor %s; waiting for %s (api-9e3b), %s (db-5c2a1)", anchor12(w.newAnchor), spiffeID("api"), spiffeID("db"))},
		},
		{
			name: "reissue: every leaf from the new anchor: the window is removed",
			obs:  w.observed(newIssuerAt(w.state(anchor.Reissue)), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer), fleetIs(w.view(onBothNewLeaves()))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.both.PEM()}, intro: introReissue, met: []string{w.goalLeaves(w.newAnchor)}},
		},
		{
			name: "reissue: window removed -> Remove",
			obs:  w.observed(newIssuerAt(w.state(anchor.Reissue)), bundleIs(w.both, 0), issuerIs(w.newIssuer), fleetIs(w.view(onBothNewLeaves()))),
			want: want{kind: anchor.Advance, stage: anchor.Remove, intro: introReissue, met: []string{w.goalLeaves(w.newAnchor)}},
		},
		{
			name: "reissue: a renewed proxy that lost the two-anchor bundle holds it",
			obs: w.observed(newIssuerAt(w.state(anchor.Reissue)), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer),
				fleetIs(w.view(onBothNewLeaves(), proxy("db", bundleOf(w.newOnly.SHA256()))))),
			want: want{kind: anchor.Wait, goal: w.goalLeaves(w.newAnchor), intro: introReissue, text: "2/3 converged"},
		},

		// Remove.
		{
			name: "remove: publishes the new anchor alone",
			obs:  w.observed(newIssuerAt(w.state(anchor.Remove)), bundleIs(w.both, 0), issuerIs(w.newIssuer), fleetIs(w.view(onBothNewLeaves()))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.newOnly.PEM()}, intro: introRemove},
		},
		{
			name: "remove: a proxy whose report still names the old anchor holds it",
			obs: w.observed(newIssuerAt(w.state(anchor.Remove)), bundleIs(w.newOnly, 0), issuerIs(w.newIssuer),
				fleetIs(w.view(onNew(), proxy("api", bundleOf(w.both.SHA256()))))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.newOnly), intro: introRemove, text: "4/5 converged on bundle " + fp12(w.newOnly) + "; waiting for " + spiffeID("api")},
		},
		{
			name: "remove: converged -> Done",
			obs:  w.observed(newIssuerAt(w.state(anchor.Remove)), bundleIs(w.newOnly, 0), issuerIs(w.newIssuer), fleetIs(w.view(onNew()))),
			want: want{kind: anchor.Advance, stage: anchor.Done, intro: introRemove, met: []string{w.goalBundle(w.newOnly)}},
		},
		{
			name: "remove: Done only when meshid check passes",
			obs:  w.observed(newIssuerAt(w.state(anchor.Remove)), bundleIs(w.newOnly, 0), issuerIs(w.expiredIssuer), fleetIs(w.view(onNew()))),
			want: want{kind: anchor.Fail, reason: anchor.ReasonCheck, intro: introRemove, met: []string{w.goalBundle(w.newOnly)}, text: "anchor: meshid check fails: "},
		},

		// Abort, Secret mode.
		{
			name: "abort: restores the saved issuer",
			obs:  w.observed(w.state(anchor.Reissue, aborting), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer), savedOldIssuer(w.oldIssuer)),
			want: want{kind: anchor.Act, action: anchor.RestoreIssuer{Cert: w.oldIssuer.CertPEM(), Key: keyPEM(w.oldIssuer)}, intro: introRestore},
		},
		{
			name: "abort: the issuer from before was not saved",
			obs:  w.observed(w.state(anchor.SwitchIssuer, aborting), bundleIs(w.both, 0), issuerIs(w.newIssuer)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonNoWayBack, intro: introRestore, text: "anchor: the issuer from before the rotation was not saved; cannot go back"},
		},
		{
			name: "abort: the saved issuer has expired since",
			obs:  w.observed(w.state(anchor.SwitchIssuer, aborting), bundleIs(w.both, 0), issuerIs(w.newIssuer), savedOldIssuer(w.expiredOldIssuer)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonNoWayBack, intro: introRestore, text: "no longer usable"},
		},
		{
			name: "abort: waits for every CA replica to sign with the old issuer again",
			obs:  w.observed(w.state(anchor.Reissue, aborting), bundleIs(w.both, 30*time.Second), fleetIs(w.view(onBothNewLeaves()))),
			want: want{kind: anchor.Wait, goal: w.goalIssuer(w.oldAnchor), text: "3/5 converged on " + w.goalIssuer(w.oldAnchor) + "; waiting for CA replica ca-0, CA replica ca-1"},
		},
		{
			name: "abort: asks proxies to renew from the old issuer",
			obs:  w.observed(w.state(anchor.SwitchIssuer, aborting), bundleIs(w.both, 0), fleetIs(w.view(onBoth(), proxy("web", leafFrom(w.newAnchor))))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.both.PEM(), Window: 30 * time.Second}, met: []string{w.goalIssuer(w.oldAnchor)}},
		},
		{
			name: "abort: a proxy with a leaf from the new anchor holds it",
			obs:  w.observed(w.state(anchor.Reissue, aborting), bundleIs(w.both, 30*time.Second), fleetIs(w.view(onBoth(), proxy("web", leafFrom(w.newAnchor))))),
			want: want{kind: anchor.Wait, goal: w.goalLeaves(w.oldAnchor), met: []string{w.goalIssuer(w.oldAnchor)}, text: "2/3 converged on leaves from anchor " + anchor12(w.oldAnchor)},
		},
		{
			name: "abort: every leaf from the old anchor: publishes the old bundle alone",
			obs:  w.observed(w.state(anchor.Reissue, aborting), bundleIs(w.both, 30*time.Second), fleetIs(w.view(onBoth()))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.old.PEM()}, intro: introOldBack, met: []string{w.goalIssuer(w.oldAnchor), w.goalLeaves(w.oldAnchor)}},
		},
		{
			name: "abort: an old bundle of two anchors: a leaf from either will do",
			obs: w.observed(w.state(anchor.Reissue, aborting, oldTwo), bundleIs(w.bothTwo, 30*time.Second),
				fleetIs(w.view(w.reports(w.bothTwo, w.oldIssuer, w.oldAnchor), proxy("db", leafFrom(w.otherAnchor))))),
			want: want{kind: anchor.Act, action: anchor.PublishBundle{PEM: w.oldTwo.PEM()}, met: []string{"the issuer from anchor " + anchor12(w.oldAnchor) + " (CA replicas)", "leaves from the old anchors"},
				intro: fmt.Sprintf("abort: publishing the old bundle (%s)", fp12(w.oldTwo))},
		},
		{
			name: "abort: the old bundle published, a proxy still holds both",
			obs:  w.observed(w.state(anchor.Reissue, aborting), fleetIs(w.view(onOldAgain(), proxy("db", bundleOf(w.both.SHA256()))))),
			want: want{kind: anchor.Wait, goal: w.goalBundle(w.old), intro: introOldBack, text: "4/5 converged on bundle " + fp12(w.old)},
		},

		// Abort, cert-manager mode.
		{
			name: "abort cert-manager: gives cert-manager its old anchor back",
			obs:  w.observed(w.state(anchor.Reissue, aborting, certManager), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer), certManagerAnchorIs(w.newAnchor), savedOldAnchor),
			want: want{kind: anchor.Act, action: anchor.GiveCertManagerAnchor{Cert: w.oldAnchor.CertPEM(), Key: keyPEM(w.oldAnchor)}, intro: introRestore},
		},
		{
			name: "abort cert-manager: then asks it to re-issue",
			obs:  w.observed(w.state(anchor.Reissue, aborting, certManager), bundleIs(w.both, 30*time.Second), issuerIs(w.newIssuer), savedOldAnchor),
			want: want{kind: anchor.Act, action: anchor.AskCertManager{}, intro: introRestore},
		},
		{
			name: "abort cert-manager: its old anchor was not saved",
			obs:  w.observed(w.state(anchor.SwitchIssuer, aborting, certManager), bundleIs(w.both, 0), issuerIs(w.newIssuer), certManagerAnchorIs(w.newAnchor)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonNoWayBack, intro: introRestore, text: "anchor: cert-manager's old anchor was not saved; cannot go back"},
		},
		{
			name: "abort cert-manager: nothing was switched: waits for the fleet",
			obs:  w.observed(w.state(anchor.Add, aborting, certManager), bundleIs(w.both, 0)),
			want: want{kind: anchor.Wait, goal: w.goalIssuer(w.oldAnchor), text: "2/5 converged"},
		},

		// Nothing to do.
		{
			name: "a finished rotation",
			obs:  w.observed(w.state(anchor.Done)),
			want: want{kind: anchor.Fail, reason: anchor.ReasonState, text: "anchor: the rotation is already Done"},
		},
		{
			name: "a stored state that names an unknown stage",
			obs:  w.observed(w.state("Sideways")),
			want: want{kind: anchor.Fail, reason: anchor.ReasonState, text: `unknown stage "Sideways"`},
		},
		{
			name: "a stored new anchor that does not parse",
			obs:  w.observed(w.state(anchor.Add, func(s *anchor.State) { s.NewAnchor = "garbage" })),
			want: want{kind: anchor.Fail, reason: anchor.ReasonState, text: "anchor: the new anchor: bundle: invalid trust bundle"},
		},
	}
	// Abort from each stage before Remove ends the same way.
	for _, stage := range []anchor.Stage{anchor.Add, anchor.SwitchIssuer, anchor.Reissue} {
		tests = append(tests, struct {
			name string
			obs  anchor.Observed
			want want
		}{
			name: "abort from " + string(stage) + ": the old bundle back everywhere -> Aborted",
			obs:  w.observed(w.state(stage, aborting)),
			want: want{kind: anchor.Advance, stage: anchor.Aborted, intro: introOldBack, met: []string{w.goalBundle(w.old)}},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, anchor.Next(tt.obs), tt.want)
		})
	}
}

func check(t *testing.T, d anchor.Decision, want want) {
	t.Helper()
	if d.Kind != want.kind {
		t.Fatalf("Next is %s %s, want %s", d.Kind, describe(d), want.kind)
	}
	if d.Intro != want.intro {
		t.Errorf("intro %q, want %q", d.Intro, want.intro)
	}
	var met []string
	for _, m := range d.Met {
		met = append(met, m.Goal)
		if !strings.HasPrefix(m.Line, "stage ") || !strings.Contains(m.Line, ": converged on "+m.Goal+" (") {
			t.Errorf("met line %q", m.Line)
		}
	}
	if !slices.Equal(met, want.met) {
		t.Errorf("met %q, want %q", met, want.met)
	}
	switch d.Kind {
	case anchor.Act:
		if !reflect.DeepEqual(d.Action, want.action) {
			t.Errorf("action %v, want %v", d.Action, want.action)
		}
	case anchor.Advance:
		if d.Stage != want.stage {
			t.Errorf("advance to %s, want %s", d.Stage, want.stage)
		}
	case anchor.Wait:
		if d.Goal != want.goal {
			t.Errorf("waits for %q, want %q", d.Goal, want.goal)
		}
		if want.text == "" && d.Message != "" || !strings.Contains(d.Message, want.text) {
			t.Errorf("message %q, want it to contain %q", d.Message, want.text)
		}
		if !want.deadline.IsZero() && !d.Deadline.Equal(want.deadline) {
			t.Errorf("deadline %s, want %s", d.Deadline, want.deadline)
		}
	case anchor.Fail:
		if d.Failure == nil {
			t.Fatal("a Fail without a Failure")
		}
		if d.Failure.Reason != want.reason {
			t.Errorf("reason %q, want %q", d.Failure.Reason, want.reason)
		}
		if d.Goal != want.goal {
			t.Errorf("failed waiting for %q, want %q", d.Goal, want.goal)
		}
		if !strings.Contains(d.Failure.Error(), want.text) {
			t.Errorf("error %q, want it to contain %q", d.Failure.Error(), want.text)
		}
	}
}

func describe(d anchor.Decision) string {
	switch d.Kind {
	case anchor.Act:
		return fmt.Sprint(d.Action)
	case anchor.Advance:
		return string(d.Stage)
	case anchor.Wait:
		return d.Goal + ": " + d.Message
	case anchor.Fail:
		return d.Failure.Error()
	}
	return ""
}

// A stage timeout names who holds the stage back and what to do.
func TestNextTimeoutHint(t *testing.T) {
	o := w.observed(w.state(anchor.Add), bundleIs(w.both, 0), waitingFor(w.goalBundle(w.both), time.Hour))
	d := anchor.Next(o)
	if d.Kind != anchor.Fail {
		t.Fatalf("Next is %s, want fail", d.Kind)
	}
	if d.Failure.Hint != "fix them and run resume (or abort)" || !strings.HasSuffix(d.Failure.Error(), "; fix them and run resume (or abort)") {
		t.Errorf("hint %q in %q", d.Failure.Hint, d.Failure.Error())
	}
	if d.Message == "" || !strings.Contains(d.Failure.Error(), d.Message) {
		t.Errorf("the error %q does not carry the last message %q", d.Failure.Error(), d.Message)
	}
}

// A failure from a bad issuer keeps the issuer's error for errors.Is.
func TestNextFailureUnwraps(t *testing.T) {
	o := w.observed(w.state(anchor.SwitchIssuer, aborting), bundleIs(w.both, 0), issuerIs(w.newIssuer), savedOldIssuer(w.expiredOldIssuer))
	d := anchor.Next(o)
	if d.Kind != anchor.Fail || !errors.Is(d.Failure, issuer.ErrExpired) {
		t.Fatalf("Next is %s %s, want a failure wrapping issuer.ErrExpired", d.Kind, describe(d))
	}
}

func TestAbortable(t *testing.T) {
	tests := []struct {
		name string
		st   *anchor.State
		want string // "" when it may be aborted
	}{
		{"Add", w.state(anchor.Add), ""},
		{"SwitchIssuer", w.state(anchor.SwitchIssuer), ""},
		{"Reissue", w.state(anchor.Reissue), ""},
		{"SwitchIssuer, cert-manager", w.state(anchor.SwitchIssuer, certManager), ""},
		{"already aborting", w.state(anchor.Reissue, aborting), ""},
		{"Remove", w.state(anchor.Remove), "anchor: too late to abort: the old anchor is being removed and every leaf already comes from the new one; finish with resume"},
		{"Done", w.state(anchor.Done), "anchor: the rotation is already Done"},
		{"Aborted", w.state(anchor.Aborted), "anchor: the rotation is already Aborted"},
		{"emergency", w.state(anchor.Reissue, emergency), "anchor: an emergency rotation cannot go back to the expired material; finish with resume"},
		{"none", nil, "anchor: no rotation to abort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.st.Abortable()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Abortable: %v, want nil", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("Abortable: %v, want %q", err, tt.want)
			}
		})
	}
}
