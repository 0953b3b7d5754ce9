package external

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/identity"
)

// Reason says why a join or a renewal was refused; it labels
// meshid_ca_external_refused_total.
type Reason string

// Reasons, each with the caller's message in Error.
const (
	// TokenInvalid: no such ExternalWorkload, no join pending, or another
	// token (one used already is no longer pending). The caller is told
	// the same in each case, so a guess learns nothing.
	TokenInvalid Reason = "join_token_invalid"
	// TokenExpired: the token is the pending one, but past its expiry.
	TokenExpired Reason = "join_token_expired"
	// Gone: the ExternalWorkload does not exist (any more), or is being
	// deleted.
	Gone Reason = "external_workload_gone"
	// NotIssued: the client certificate is not the one the CA issued last
	// to this ExternalWorkload (revoked, or replaced by a later join).
	NotIssued Reason = "certificate_not_issued_to_it"
	// AccountMismatch: the ExternalWorkload now names another service
	// account than the caller's certificate.
	AccountMismatch Reason = "service_account_mismatch"
	// Changed: the object changed between the check and the status update
	// (a concurrent join, a revoke); nothing was issued.
	Changed Reason = "external_workload_changed"
)

// Reasons lists every Reason, for metrics.
var Reasons = []Reason{TokenInvalid, TokenExpired, Gone, NotIssued, AccountMismatch, Changed}

// Error is a refused join or renewal: Reason, the message the caller gets
// (Error), and Detail, which only the CA's log gets.
type Error struct {
	Reason Reason
	msg    string
	Detail string
}

func (e *Error) Error() string { return e.msg }

func refuse(r Reason, detail, format string, args ...any) *Error {
	return &Error{Reason: r, msg: fmt.Sprintf(format, args...), Detail: detail}
}

// invalidToken is the one answer to every join that names no pending
// token of an existing object.
func invalidToken(ns, name, detail string) *Error {
	return refuse(TokenInvalid, detail, "the join token is not valid for ExternalWorkload %s/%s (unknown, already used, or for another workload): ask the operator for a new one (meshid workload join %s -n %s)", ns, name, name, ns)
}

// CheckJoin decides a join of w (nil: no such object) with token at now,
// and returns the service account whose identity it gets.
func CheckJoin(w *v1alpha1.ExternalWorkload, ns, name, token string, now time.Time) (identity.ServiceAccount, error) {
	switch {
	case w == nil:
		return identity.ServiceAccount{}, invalidToken(ns, name, "no such ExternalWorkload")
	case w.DeletionTimestamp != nil:
		return identity.ServiceAccount{}, invalidToken(ns, name, "the ExternalWorkload is being deleted")
	case w.Status.Join == nil:
		return identity.ServiceAccount{}, invalidToken(ns, name, "no join pending (never made, or used)")
	case !matches(token, w.Status.Join.SHA256):
		return identity.ServiceAccount{}, invalidToken(ns, name, "another token than the pending one")
	case !now.Before(w.Status.Join.Expires.Time):
		return identity.ServiceAccount{}, refuse(TokenExpired, "", "the join token of ExternalWorkload %s/%s expired at %s: ask the operator for a new one (meshid workload join %s -n %s)",
			ns, name, w.Status.Join.Expires.UTC().Format(time.RFC3339), name, ns)
	}
	return identity.ServiceAccount{Namespace: w.Namespace, Name: w.Spec.ServiceAccount}, nil
}

// CheckRenew decides a renewal of w (nil: no such object) by the holder of
// a certificate with serial (hex) for sa.
func CheckRenew(w *v1alpha1.ExternalWorkload, sa identity.ServiceAccount, name, serial string) error {
	switch {
	case w == nil || w.DeletionTimestamp != nil:
		return refuse(Gone, "", "ExternalWorkload %s/%s does not exist (deleted, or being deleted): its renewals have stopped; the operator must create it again and join it anew", sa.Namespace, name)
	case w.Spec.ServiceAccount != sa.Name:
		return refuse(AccountMismatch, "its service account is "+w.Spec.ServiceAccount, "ExternalWorkload %s/%s is not for service account %s: renew under the name of your own ExternalWorkload, or join it again (meshid workload join %s -n %s)",
			sa.Namespace, name, sa.Name, name, sa.Namespace)
	case w.Status.Serial == "" || !strings.EqualFold(w.Status.Serial, serial):
		detail := "status serial " + w.Status.Serial
		if w.Status.Serial == "" {
			detail = "no certificate in force (revoked, or never joined)"
		}
		return refuse(NotIssued, detail+", caller's "+serial, "the client certificate (serial %s) is not the one meshid-ca issued last to ExternalWorkload %s/%s (revoked, or replaced by a later join): join it again (meshid workload join %s -n %s)",
			serial, sa.Namespace, name, name, sa.Namespace)
	}
	return nil
}

// Issued records in w's status a certificate issued at now: its serial
// (hex) and expiry; a join also uses up the token.
func Issued(w *v1alpha1.ExternalWorkload, serial string, notAfter, now time.Time, joined bool) {
	t := metav1.NewTime(now)
	w.Status.Serial = serial
	w.Status.NotAfter = &metav1.Time{Time: notAfter}
	w.Status.LastSeen = &t
	if joined {
		w.Status.Join = nil
		w.Status.JoinedAt = &t
	}
}

// Revoke stops w's renewals: the certificate in force is no longer
// renewed, and no pending join token is accepted. It returns the
// lifetime left to the last certificate at now (0 when none or expired).
func Revoke(w *v1alpha1.ExternalWorkload, now time.Time) time.Duration {
	t := metav1.NewTime(now)
	w.Status.Serial, w.Status.Join, w.Status.RevokedAt = "", nil, &t
	return Remaining(w, now)
}

// Remaining is the lifetime left at now to the last certificate issued to
// w; 0 when none or expired.
func Remaining(w *v1alpha1.ExternalWorkload, now time.Time) time.Duration {
	if w.Status.NotAfter == nil {
		return 0
	}
	return max(w.Status.NotAfter.Sub(now), 0)
}
