package csr

import "fmt"

// Reason says why a CSR was refused. Reasons are stable: they label metrics.
type Reason string

const (
	// Malformed: the bytes are not a DER PKCS#10 request.
	Malformed Reason = "csr_malformed"
	// BadSignature: the request is not signed by the key it carries.
	BadSignature Reason = "csr_bad_signature"
	// WeakKey: the key type or size is not one the CA accepts.
	WeakKey Reason = "csr_key_refused"
	// CARequested: the request asks for a CA certificate.
	CARequested Reason = "csr_ca_requested"
	// NameMismatch: the request names an identity other than the proven one
	// (or spells it otherwise, or more than once), or a kind of name (DNS,
	// IP, email) a workload certificate never carries.
	NameMismatch Reason = "csr_name_mismatch"
	// ExtensionRefused: the request asks for key usages, extended key
	// usages or name constraints, which the CA alone decides.
	ExtensionRefused Reason = "csr_extension_refused"
)

// Error is a refused CSR.
type Error struct {
	Reason Reason
	// Detail says what was wrong, for a person.
	Detail string
}

func (e *Error) Error() string { return fmt.Sprintf("csr: %s", e.Detail) }

func refuse(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
