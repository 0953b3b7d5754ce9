package fleet

import (
	"time"
	"unicode/utf8"
)

// What a replica publishes of the trust material it has in force, so that
// `meshid check` reports what the CA signs with rather than what the
// Secret and ConfigMap say (a refused update leaves them apart).
const (
	// MaxAnchors bounds the anchors a report lists: a bundle holds one or
	// two (during a rotation); Report.AnchorsTotal says how many it has.
	MaxAnchors = 16
	// MaxTextLen bounds a subject, a source name or a reason, in bytes.
	MaxTextLen = 512
)

// Issuer is the issuer a replica signs with.
type Issuer struct {
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	// NotAfter is the earliest NotAfter of the issuer and the certificates
	// it ships above it: no leaf it signs outlives it.
	NotAfter time.Time `json:"not_after"`
	// ChainNotAfter is the earliest NotAfter along its verified chain to
	// the bundle in force, anchor included; zero when it does not chain.
	ChainNotAfter time.Time `json:"chain_not_after,omitzero"`
	// AnchorSHA256 is the anchor of the bundle in force it chains to;
	// empty when it chains to none.
	AnchorSHA256 string `json:"anchor_sha256,omitempty"`
}

// Upstream is what a replica whose issuer comes from an upstream authority
// (meshid-ca --issuer-source step-ca) knows of its renewals.
type Upstream struct {
	// Upstream names the authority ("step-ca https://... provisioner NAME").
	Upstream string `json:"upstream"`
	// KeyLocation is where the intermediates' key lives: memory or pkcs11.
	KeyLocation string `json:"key_location"`
	// Reachable: the last attempt got an answer (used or refused).
	Reachable bool `json:"reachable"`
	// LastRenewal is when the intermediate in force was obtained,
	// NextRenewal when the next attempt is due; NotAfter is the
	// intermediate's own (zero before the first).
	LastRenewal time.Time `json:"last_renewal,omitzero"`
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	// Failures in a row, and the last one's reason (bounded).
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Bounded returns u with its texts cut to MaxTextLen.
func (u Upstream) Bounded() Upstream {
	u.Upstream, u.KeyLocation, u.LastError = Truncate(u.Upstream), Truncate(u.KeyLocation), Truncate(u.LastError)
	return u
}

// Anchor is one anchor of the bundle a replica has in force.
type Anchor struct {
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

// UpdateStatus says what a replica did with an update of its trust
// material that it did not take. Values are stable: `meshid check` and
// scripts read them.
type UpdateStatus string

const (
	// UpdateRefused: the update is invalid (does not parse, expired, not a
	// CA, key mismatch, ...) and is never used.
	UpdateRefused UpdateStatus = "refused"
	// UpdateHeldBack: the update only waits for its partner (an issuer for
	// a bundle without its anchor, a bundle that would orphan the issuer in
	// force, an issuer not valid yet) and is used once that arrives.
	UpdateHeldBack UpdateStatus = "held_back"
	// UpdateGone: the object was deleted, or the files cannot be read.
	UpdateGone UpdateStatus = "gone"
)

// Update is the latest update of one material ("issuer" or "bundle") that
// a replica did not take. Meanwhile the last good material stays in force
// (Report.Issuer, Report.Anchors). It is cleared by the next update the
// replica takes, or that changes nothing.
type Update struct {
	Material string `json:"material"`
	// Source names where the update came from: "Secret NS/NAME",
	// "ConfigMap NS/NAME" or "files PATH,...".
	Source string       `json:"source"`
	Status UpdateStatus `json:"status"`
	// Reason is why, as the replica logged it.
	Reason string `json:"reason"`
	// SHA256 is the refused issuer certificate's fingerprint, or the
	// refused bundle's SHA-256, when it parsed that far.
	SHA256 string `json:"sha256,omitempty"`
	// Since is when the replica first did not take this update.
	Since time.Time `json:"since"`
}

// Bounded returns u with its texts cut to MaxTextLen bytes.
func (u Update) Bounded() Update {
	u.Source, u.Reason = Truncate(u.Source), Truncate(u.Reason)
	return u
}

// Truncate cuts s to at most MaxTextLen bytes, on a rune boundary, marking
// the cut with "...".
func Truncate(s string) string {
	if len(s) <= MaxTextLen {
		return s
	}
	cut := MaxTextLen - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
