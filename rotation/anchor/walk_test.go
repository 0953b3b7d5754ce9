package anchor_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/anchor"
)

// model is a cluster in memory that does what Next says at once: CA
// replicas load the issuer and bundle as soon as they are written, proxies
// load the bundle and, while a re-issue window is set, renew from the
// issuer; cert-manager re-issues as soon as it is asked.
type model struct {
	t        *testing.T
	st       *anchor.State
	bundle   *bundle.Bundle
	window   time.Duration
	iss      *issuer.KeyPair // nil: deleted
	cmAnchor *issuer.KeyPair
	saved    anchor.Saved
	asked    bool
	leaves   *issuer.KeyPair // the anchor the proxies' leaves chain to
	log      []string
}

func newModel(t *testing.T, st *anchor.State) *model {
	m := &model{t: t, st: st, bundle: w.old, iss: w.oldIssuer, cmAnchor: w.oldAnchor, leaves: w.oldAnchor,
		saved: anchor.Saved{NewAnchorKey: keyPEM(w.newAnchor)}}
	return m
}

func (m *model) observe() anchor.Observed {
	if m.window > 0 && m.iss != nil && m.iss.Verify(m.bundle, w.now) == nil {
		m.leaves = m.anchorOf(m.iss)
	}
	o := anchor.Observed{Now: w.now, State: m.st, Saved: m.saved, Bundle: m.bundle.PEM(), AskedCertManager: m.asked, Timeout: time.Minute}
	if m.window > 0 {
		o.Window = m.window.String()
	}
	iss := m.iss
	if iss == nil {
		iss = w.expiredIssuer // what the replicas still sign with; nothing chains to it now
		o.IssuerErr = notFound("meshid-issuer")
	} else {
		o.IssuerCert, o.IssuerKey = iss.CertPEM(), keyPEM(iss)
	}
	if m.st.CertManager {
		o.CertManagerAnchor, o.CertManagerAnchorKey = m.cmAnchor.CertPEM(), keyPEM(m.cmAnchor)
	}
	o.Fleet = fleet.Merge(w.reports(m.bundle, iss, m.leaves), w.now, 30*time.Second)
	return o
}

func (m *model) anchorOf(kp *issuer.KeyPair) *issuer.KeyPair {
	for _, a := range []*issuer.KeyPair{w.oldAnchor, w.newAnchor} {
		if kp.Cert.CheckSignatureFrom(a.Cert) == nil {
			return a
		}
	}
	m.t.Fatalf("issuer %s comes from no known anchor", kp.Cert.Subject)
	return nil
}

func (m *model) name(pem []byte) string {
	for name, b := range map[string]*bundle.Bundle{"old": w.old, "both": w.both, "new": w.newOnly} {
		if bytes.Equal(pem, b.PEM()) {
			return name
		}
	}
	return "?"
}

func (m *model) apply(a anchor.Action) string {
	switch a := a.(type) {
	case anchor.PublishBundle:
		m.bundle, m.window = must(bundle.Parse(a.PEM)), a.Window
		if a.Window > 0 {
			return fmt.Sprintf("publish %s, window %s", m.name(a.PEM), a.Window)
		}
		return "publish " + m.name(a.PEM)
	case anchor.BackupIssuer:
		m.saved.OldIssuerCert, m.saved.OldIssuerKey = a.Cert, a.Key
		return "back up the issuer"
	case anchor.WriteIssuer:
		if !bytes.Equal(a.AnchorCert, w.newOnly.PEM()) || !bytes.Equal(a.AnchorKey, keyPEM(w.newAnchor)) {
			m.t.Fatalf("WriteIssuer from another anchor than the new one")
		}
		m.iss = w.newIssuer
		return "write an issuer"
	case anchor.RestoreIssuer:
		m.iss = must(issuer.Parse(a.Cert, a.Key))
		return "restore the issuer"
	case anchor.BackupCertManagerAnchor:
		m.saved.OldAnchorCert, m.saved.OldAnchorKey = a.Cert, a.Key
		return "back up cert-manager's anchor"
	case anchor.GiveCertManagerAnchor:
		m.cmAnchor = must(issuer.Parse(a.Cert, a.Key))
		return "give cert-manager the " + m.name(a.Cert) + " anchor"
	case anchor.AskCertManager:
		m.asked = true
		m.iss = map[bool]*issuer.KeyPair{true: w.newIssuer, false: w.oldIssuer}[m.cmAnchor.Cert.Equal(w.newAnchor.Cert)]
		return "ask cert-manager"
	case anchor.RecordIssuer:
		m.st.NewIssuerSHA256 = a.SHA256
		return "record the issuer"
	}
	m.t.Fatalf("unknown action %T", a)
	return ""
}

// walk runs Next on the model until the rotation reaches until (or
// finishes), logging what it does; a wait or a failure is fatal: in this
// model everything converges at once.
func (m *model) walk(until anchor.Stage) { m.steps(until, 50) }

// steps is walk for at most n decisions.
func (m *model) steps(until anchor.Stage, n int) {
	m.t.Helper()
	for range n {
		if m.st.Stage.Finished() || m.st.Stage == until {
			return
		}
		d := anchor.Next(m.observe())
		switch d.Kind {
		case anchor.Act:
			m.log = append(m.log, fmt.Sprintf("%s: %s", m.st.Stage, m.apply(d.Action)))
		case anchor.Advance:
			m.log = append(m.log, fmt.Sprintf("%s -> %s", m.st.Stage, d.Stage))
			m.st.Stage, m.asked = d.Stage, false
		default:
			m.t.Fatalf("at %s: %s %s\nso far: %q", m.st.Stage, d.Kind, describe(d), m.log)
		}
	}
	if n == 50 {
		m.t.Fatalf("no end after 50 decisions: %q", m.log)
	}
}

var forward = []string{
	"Add: publish both",
	"Add -> SwitchIssuer",
	"SwitchIssuer: back up the issuer",
	"SwitchIssuer: write an issuer",
	"SwitchIssuer: record the issuer",
	"SwitchIssuer -> Reissue",
	"Reissue: publish both, window 30s",
	"Reissue: publish both",
	"Reissue -> Remove",
	"Remove: publish new",
	"Remove -> Done",
}

// forward is the log of a whole staged rotation.
func (m *model) forward() []string {
	if !m.st.CertManager {
		return forward
	}
	return slices.Concat(forward[:2], []string{
		"SwitchIssuer: back up cert-manager's anchor",
		"SwitchIssuer: give cert-manager the new anchor",
		"SwitchIssuer: ask cert-manager",
	}, forward[4:])
}

// TestNextWalk walks whole rotations, every stage transition in order,
// with Next alone.
func TestNextWalk(t *testing.T) {
	t.Run("staged", func(t *testing.T) {
		m := newModel(t, w.state(anchor.Add))
		m.walk("")
		if !slices.Equal(m.log, forward) {
			t.Errorf("walk:\n%q\nwant\n%q", m.log, forward)
		}
		if m.name(m.bundle.PEM()) != "new" || m.iss != w.newIssuer || m.leaves != w.newAnchor {
			t.Errorf("at the end: bundle %s, issuer %s, leaves from %s", m.name(m.bundle.PEM()), m.iss.Cert.Subject, m.leaves.Cert.Subject)
		}
	})
	t.Run("cert-manager", func(t *testing.T) {
		m := newModel(t, w.state(anchor.Add, certManager))
		m.walk("")
		if want := m.forward(); !slices.Equal(m.log, want) {
			t.Errorf("walk:\n%q\nwant\n%q", m.log, want)
		}
	})
	t.Run("emergency", func(t *testing.T) {
		m := newModel(t, w.state(anchor.SwitchIssuer, emergency))
		m.walk("")
		want := []string{
			"SwitchIssuer: publish new, window 30s",
			"SwitchIssuer: back up the issuer",
			"SwitchIssuer: write an issuer",
			"SwitchIssuer: record the issuer",
			"SwitchIssuer -> Reissue",
			"Reissue: publish new",
			"Reissue -> Done",
		}
		if !slices.Equal(m.log, want) {
			t.Errorf("walk:\n%q\nwant\n%q", m.log, want)
		}
	})
	// Resume: a run stopped after any decision, and a new one started from
	// what is stored, does what is left, and nothing twice.
	for _, certManager := range []bool{false, true} {
		steps := len(forward) + map[bool]int{true: 1}[certManager]
		for n := 1; n < steps; n++ {
			t.Run(fmt.Sprintf("resume after %d decisions (cert-manager %t)", n, certManager), func(t *testing.T) {
				st := w.state(anchor.Add)
				st.CertManager = certManager
				m := newModel(t, st)
				m.steps("", n)
				m.asked = false // what the stopped run remembered
				m.walk("")
				if !slices.Equal(m.log, m.forward()) {
					t.Errorf("walk:\n%q\nwant\n%q", m.log, m.forward())
				}
			})
		}
	}
	aborts := []struct {
		from  anchor.Stage
		cm    bool
		after []string
	}{
		{anchor.SwitchIssuer, false, []string{
			"SwitchIssuer: publish both, window 30s",
			"SwitchIssuer: publish old",
			"SwitchIssuer -> Aborted",
		}},
		{anchor.Reissue, false, []string{
			"Reissue: restore the issuer",
			"Reissue: publish both, window 30s",
			"Reissue: publish old",
			"Reissue -> Aborted",
		}},
		{anchor.Remove, false, nil}, // refused: see TestAbortable
		{anchor.Reissue, true, []string{
			"Reissue: give cert-manager the old anchor",
			"Reissue: ask cert-manager",
			"Reissue: publish both, window 30s",
			"Reissue: publish old",
			"Reissue -> Aborted",
		}},
	}
	for _, a := range aborts {
		if a.after == nil {
			continue
		}
		t.Run(fmt.Sprintf("abort from %s (cert-manager %t)", a.from, a.cm), func(t *testing.T) {
			st := w.state(anchor.Add)
			st.CertManager = a.cm
			m := newModel(t, st)
			m.walk(a.from)
			before := len(m.log)
			if err := m.st.Abortable(); err != nil {
				t.Fatal(err)
			}
			m.st.Aborting = true
			m.walk("")
			if got := m.log[before:]; !slices.Equal(got, a.after) {
				t.Errorf("abort:\n%q\nwant\n%q", got, a.after)
			}
			if m.st.Stage != anchor.Aborted || m.name(m.bundle.PEM()) != "old" || !m.iss.Cert.Equal(w.oldIssuer.Cert) || m.leaves != w.oldAnchor {
				t.Errorf("after abort: stage %s, bundle %s, issuer %s, leaves from %s", m.st.Stage, m.name(m.bundle.PEM()), m.iss.Cert.Subject, m.leaves.Cert.Subject)
			}
		})
	}
	t.Run("abort from Add", func(t *testing.T) {
		m := newModel(t, w.state(anchor.Add))
		m.apply(anchor.Next(m.observe()).Action) // published both
		m.st.Aborting = true
		m.walk("")
		want := []string{"Add: publish both, window 30s", "Add: publish old", "Add -> Aborted"}
		if !slices.Equal(m.log, want) {
			t.Errorf("abort:\n%q\nwant\n%q", m.log, want)
		}
	})
}
