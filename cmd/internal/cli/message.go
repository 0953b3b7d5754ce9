package cli

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// prefixes are meshid's packages (and the parts of one) whose errors reach
// a command, as each starts its messages ("rotation: certify: ...").
var prefixes = []string{
	"admission", "anchor", "authn", "bundle", "ca", "certify", "certinfo", "certmanager", "check",
	"cli", "csr", "dashboard", "distribute", "endpoint", "external", "fleet", "foreign", "health",
	"identity", "inject", "inspect", "install", "issuer", "jwtkey", "keys", "kube", "manifest",
	"oidc", "output", "policies", "policy", "poll", "proxy", "redirect", "rotation", "sidecar",
	"source", "state", "stepca", "trust", "upstream", "verify", "webhooks", "workload",
}

// internalPrefix matches the package prefix an error gets inside meshid
// at the start of the message or of one of its wrapped parts. The
// prefixes help a developer read a log, but tell an operator nothing.
var internalPrefix = regexp.MustCompile(`(^|: )(` + strings.Join(prefixes, "|") + `): `)

// dialFailure is how gRPC's client starts the description of an
// Unavailable it made itself, when no CA was reached to answer.
const dialFailure = `(?:last )?(?:connection|name resolver|resolver) error: `

// grpcStatus is how a gRPC error prints its code, and the dial failure
// that may follow.
var grpcStatus = regexp.MustCompile(`rpc error: code = (\w+) desc = (` + dialFailure + `)?`)

var dialFailed = regexp.MustCompile(`^` + dialFailure)

// Message is err as an operator reads it: no internal package prefixes,
// and a gRPC status said in words.
func Message(err error) string {
	msg := grpcStatus.ReplaceAllStringFunc(err.Error(), func(m string) string {
		sub := grpcStatus.FindStringSubmatch(m)
		if sub[2] != "" {
			return sub[2]
		}
		return "meshid-ca answered " + sub[1] + ": "
	})
	for {
		next := internalPrefix.ReplaceAllString(msg, "$1")
		if next == msg {
			break
		}
		msg = next
	}
	return strings.TrimSpace(msg)
}

// CAUnreachable says err, from a call to meshid-ca, is gRPC's for a CA it
// could not connect to (not one that answered, or failed the TLS
// handshake).
func CAUnreachable(err error) bool {
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return false
	}
	switch s := gs.GRPCStatus(); s.Code() {
	case codes.Unavailable:
		return dialFailed.MatchString(s.Message()) && !strings.Contains(s.Message(), "authentication handshake failed")
	case codes.DeadlineExceeded:
		return true
	}
	return false
}

// CannotReachCA is how a command says it could not reach meshid-ca at
// addr, the --ca flag's value.
func CannotReachCA(addr string) string {
	return fmt.Sprintf("cannot reach meshid-ca at %s (--ca)", addr)
}
