package cli

import (
	"regexp"
	"strings"
)

// internalPrefix matches the package prefix an error gets inside meshid
// ("rotation: certify: ...", as errors are wrapped) at the start of the
// message or of one of its wrapped parts. The names are meshid's packages
// whose errors reach a command; the prefixes help a developer read a log,
// but tell an operator nothing.
var internalPrefix = regexp.MustCompile(`(^|: )(anchor|bundle|ca|certify|certinfo|check|cli|fleet|health|identity|inspect|install|issuer|kube|manifest|output|policy|rotation|verify): `)

// grpcStatus is how a gRPC error prints its code.
var grpcStatus = regexp.MustCompile(`rpc error: code = (\w+) desc = `)

// Message is err as an operator reads it: no internal package prefixes,
// and a gRPC status said in words.
func Message(err error) string {
	msg := err.Error()
	for {
		next := internalPrefix.ReplaceAllString(msg, "$1")
		if next == msg {
			break
		}
		msg = next
	}
	msg = grpcStatus.ReplaceAllString(msg, "meshid-ca answered $1: ")
	return strings.TrimSpace(msg)
}
