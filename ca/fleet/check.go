package fleet

import (
	"fmt"
	"time"
)

// Bounds of what a report may say. A proxy sends 16 hex characters as its
// instance, SHA-256 fingerprints in lowercase hex, its leaf's serial in
// hex and a 10 s heartbeat (proxy/report.go).
const (
	// MaxInstanceLen bounds an instance name; its characters are ASCII
	// letters, digits, '-', '_' and '.'.
	MaxInstanceLen = 64
	// MaxSerialLen bounds a leaf serial in hex digits: RFC 5280 allows at
	// most 20 octets.
	MaxSerialLen = 40
	// MaxHeartbeat bounds the heartbeat a proxy announces: three missed
	// heartbeats must fit within Forget, or a silent proxy would never be
	// shown as silent.
	MaxHeartbeat = Forget / 3
)

// Check reports the first thing wrong with p's own fields (its ID and
// LastSeen are the CA's, not the proxy's), as an *Error. An empty SHA-256,
// serial or NotAfter is fine: a proxy sends them before its first bundle
// or leaf.
func Check(p Proxy) error {
	if !safeName(p.Instance) {
		what := fmt.Sprintf("%q", p.Instance)
		if len(p.Instance) > MaxInstanceLen {
			what = fmt.Sprintf("of %d bytes", len(p.Instance))
		}
		return refuse(InstanceInvalid, "instance %s must be 1 to %d ASCII letters, digits, '-', '_' or '.'", what, MaxInstanceLen)
	}
	for _, f := range []struct{ name, v string }{
		{"bundle_sha256", p.BundleSHA256},
		{"leaf_issuer_sha256", p.LeafIssuerSHA256},
		{"leaf_anchor_sha256", p.LeafAnchorSHA256},
	} {
		if f.v != "" && (len(f.v) != 64 || !lowerHex(f.v)) {
			return refuse(SHA256Invalid, "%s must be empty or a SHA-256 as 64 lowercase hex characters, not %d characters", f.name, len(f.v))
		}
	}
	if len(p.LeafSerial) > MaxSerialLen || !lowerHex(p.LeafSerial) {
		return refuse(SerialInvalid, "leaf_serial must be empty or at most %d lowercase hex digits (a serial has at most 20 octets), not %d characters", MaxSerialLen, len(p.LeafSerial))
	}
	if hb := time.Duration(p.Heartbeat); hb < 0 || hb > MaxHeartbeat {
		return refuse(HeartbeatInvalid, "heartbeat must be 0 (the default, 10 s) to %s, not %s", MaxHeartbeat, hb)
	}
	if !p.LeafNotAfter.IsZero() && (p.LeafNotAfter.Year() < 1 || p.LeafNotAfter.Year() > 9999) {
		return refuse(NotAfterInvalid, "leaf_not_after must be a time in the years 1 to 9999")
	}
	return nil
}

func safeName(s string) bool {
	if s == "" || len(s) > MaxInstanceLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func lowerHex(s string) bool {
	for i := range len(s) {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
