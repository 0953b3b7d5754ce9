package foreign

import (
	"errors"
	"fmt"
)

// Reason says why a fetched bundle was refused; each is a label of
// meshid_ca_foreign_bundle_refused_total.
type Reason string

// The reasons a fetch is refused. In every case the last good bundle of
// that trust domain stays in force.
const (
	Unreachable      Reason = "unreachable"        // no connection, TLS or endpoint authentication failed
	Slow             Reason = "slow"               // the answer did not arrive within the time limit
	HTTPStatus       Reason = "http-status"        // an answer other than 200
	Oversized        Reason = "oversized"          // an answer over the size limit
	Garbage          Reason = "garbage"            // not a SPIFFE bundle document
	NoAnchors        Reason = "no-anchors"         // a document without an X.509 authority
	OtherTrustDomain Reason = "other-trust-domain" // an anchor of another trust domain, or one of ours
	Expired          Reason = "expired"            // an anchor outside its validity
)

// Reasons lists every Reason, for metrics.
var Reasons = []Reason{Unreachable, Slow, HTTPStatus, Oversized, Garbage, NoAnchors, OtherTrustDomain, Expired}

// Error is a refused fetch.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("foreign: %s: %v", e.Reason, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of err, Unreachable if it has none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return Unreachable
}

func refuse(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}
