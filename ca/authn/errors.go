package authn

import (
	"errors"
	"fmt"
)

// Reason says why a token was refused. Reasons are stable: they label metrics.
type Reason string

const (
	// Rejected: the API server did not authenticate the token for the
	// audience (wrong audience, expired, deleted service account or pod,
	// garbage).
	Rejected Reason = "token_rejected"
	// NotServiceAccount: the token is valid but names a user that is not a
	// service account.
	NotServiceAccount Reason = "token_not_service_account"
	// AudienceDropped: the API server answered without confirming the
	// audience; the token is refused rather than trusted without it.
	AudienceDropped Reason = "token_audience_unconfirmed"
	// Unavailable: the API server could not be asked; retry later.
	Unavailable Reason = "token_review_unavailable"
	// Missing: no token was sent.
	Missing Reason = "token_missing"
	// Malformed: the token is larger than the limit.
	Malformed Reason = "token_malformed"
)

// Error is a refused or unreviewable token.
type Error struct {
	Reason Reason
	// Detail says what happened, for a person. It never holds the token.
	Detail string
	err    error
}

func (e *Error) Error() string { return fmt.Sprintf("authn: %s", e.Detail) }

// Unwrap returns the underlying API error, if any.
func (e *Error) Unwrap() error { return e.err }

// ReasonOf returns the Reason of an *Error in err's chain, or "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
