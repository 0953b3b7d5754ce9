package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/source"
	"github.com/meshid/meshid/ca/trust"
)

// updates remembers, per material, the latest update this replica did not
// take, for its fleet report: what `meshid check` shows as a pending bad
// update while the last good material stays in force.
type updates struct {
	now func() time.Time

	mu     sync.Mutex
	latest map[source.Material]fleet.Update
}

func newUpdates(now func() time.Time) *updates {
	return &updates{now: now, latest: map[source.Material]fleet.Update{}}
}

// applied records the result of handing an update of m from src to the
// store: err nil clears the record (the update was taken, or changed
// nothing); otherwise it is refused or held back (trust.ErrHeldBack). sha
// names the update when it parsed that far.
func (u *updates) applied(m source.Material, src, sha string, err error) {
	if err == nil {
		u.mu.Lock()
		delete(u.latest, m)
		u.mu.Unlock()
		return
	}
	status := fleet.UpdateRefused
	if errors.Is(err, trust.ErrHeldBack) {
		status = fleet.UpdateHeldBack
	}
	u.set(fleet.Update{Material: string(m), Source: src, Status: status, Reason: err.Error(), SHA256: sha})
}

// retried records the result of trying a held-back update of m again:
// taken clears the record; an error replaces its status and reason.
func (u *updates) retried(m source.Material, changed bool, err error) {
	u.mu.Lock()
	cur, ok := u.latest[m]
	u.mu.Unlock()
	switch {
	case changed:
		u.applied(m, "", "", nil)
	case err != nil && ok:
		u.applied(m, cur.Source, cur.SHA256, err)
	}
}

// goneReasons is why each material's source is gone (deleted, missing,
// unreadable, or an API server that does not answer), for /ready to say
// why nothing is loaded; "" when none is.
func (u *updates) goneReasons() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var reasons []string
	for _, up := range u.latest {
		if up.Status == fleet.UpdateGone {
			reasons = append(reasons, up.Reason)
		}
	}
	slices.Sort(reasons)
	return strings.Join(reasons, "; ")
}

// gone records that the source of m is deleted or unreadable.
func (u *updates) gone(m source.Material, src string, err error) {
	u.set(fleet.Update{Material: string(m), Source: src, Status: fleet.UpdateGone, Reason: err.Error()})
}

// set records next, keeping Since when it repeats the record in place (a
// held-back issuer tried again, a file that still cannot be read).
func (u *updates) set(next fleet.Update) {
	next = next.Bounded()
	u.mu.Lock()
	defer u.mu.Unlock()
	next.Since = u.now()
	m := source.Material(next.Material)
	if cur, ok := u.latest[m]; ok && cur.Status == next.Status && cur.SHA256 == next.SHA256 && cur.Source == next.Source {
		next.Since = cur.Since
	}
	u.latest[m] = next
}

// list returns the records, oldest first, dropping held-back ones the store
// no longer holds (their partner arrived and both were taken).
func (u *updates) list(store *trust.Store) []fleet.Update {
	heldIssuer, heldBundle := store.HeldBack()
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []fleet.Update
	for m, up := range u.latest {
		held := map[source.Material]bool{source.Issuer: heldIssuer, source.Bundle: heldBundle}[m]
		if up.Status == fleet.UpdateHeldBack && !held {
			delete(u.latest, m)
			continue
		}
		out = append(out, up)
	}
	slices.SortFunc(out, func(a, b fleet.Update) int { return a.Since.Compare(b.Since) })
	return out
}

// certSHA256 is the fingerprint of the first PEM certificate in data, or "".
func certSHA256(data []byte) string {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return ""
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return ""
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// bundleSHA256 is the SHA-256 of the bundle in data, or "" when it does not
// parse.
func bundleSHA256(data []byte) string {
	b, err := bundle.Parse(data)
	if err != nil {
		return ""
	}
	return b.SHA256()
}
