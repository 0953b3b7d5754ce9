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
	// Canceled: the caller went away first.
	Canceled Reason = "canceled"
	// Missing: no token was sent.
	Missing Reason = "token_missing"
	// Malformed: the token is larger than the limit.
	Malformed Reason = "token_malformed"
	// MultiAudience: the token is for the CA's audience and for others too,
	// so whoever holds one of those others could replay it to the CA.
	MultiAudience Reason = "token_multi_audience"
)

// Error is a refused or unreviewable token.
type Error struct {
	Reason Reason
	// Detail says what happened, for the caller: a fixed message per case.
	// It never holds the token, the API server's own words (they name
	// service-account and pod UIDs), nor anything about the CA's own
	// configuration.
	Detail string
	// Internal adds what the operator of the CA should know, such as the
	// API server's answer; it is logged, never sent to the caller.
	Internal string
	err      error
}

func (e *Error) Error() string { return fmt.Sprintf("authn: %s", e.Detail) }

// LogValue is what the CA logs: Detail, Internal and the cause.
func (e *Error) LogValue() string {
	msg := e.Error()
	if e.Internal != "" {
		msg += "; " + e.Internal
	}
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg
}

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
