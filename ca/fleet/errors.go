package fleet

import "fmt"

// Reason says why a status report was refused. Reasons are stable: they
// label metrics.
type Reason string

const (
	// InstanceInvalid: the instance is empty, too long or has characters
	// outside the safe set.
	InstanceInvalid Reason = "instance_invalid"
	// SHA256Invalid: a SHA-256 field is neither empty nor 64 lowercase hex
	// characters.
	SHA256Invalid Reason = "sha256_invalid"
	// SerialInvalid: the leaf serial is neither empty nor at most 40 hex
	// digits.
	SerialInvalid Reason = "serial_invalid"
	// HeartbeatInvalid: the heartbeat is negative or longer than
	// MaxHeartbeat.
	HeartbeatInvalid Reason = "heartbeat_invalid"
	// NotAfterInvalid: the leaf's NotAfter is outside the years 1 to 9999.
	NotAfterInvalid Reason = "not_after_invalid"
	// IdentityFull: the identity already has its most live instances on
	// this replica (Config.MaxPerIdentity).
	IdentityFull Reason = "identity_full"
	// ReplicaFull: the replica already holds its most live instances
	// (Config.MaxInstances).
	ReplicaFull Reason = "replica_full"
)

// Reasons are every Reason, for metrics to start at zero.
var Reasons = []Reason{InstanceInvalid, SHA256Invalid, SerialInvalid, HeartbeatInvalid, NotAfterInvalid, IdentityFull, ReplicaFull}

// Error is a refused status report.
type Error struct {
	Reason Reason
	// Detail says what was wrong and what to do, for a person.
	Detail string
}

func (e *Error) Error() string { return "fleet: " + e.Detail }

// Full reports whether the report was refused for a cap (the replica has
// no room), not for what it said.
func (e *Error) Full() bool { return e.Reason == IdentityFull || e.Reason == ReplicaFull }

func refuse(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
