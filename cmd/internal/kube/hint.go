package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"k8s.io/client-go/rest"
)

// unreachable marks an error of the transport to the API server (it was
// not reached, or did not answer: a refused or timed-out connection, a
// name that does not resolve, a certificate that does not verify), with
// the Target it was meant for. Its text is err's: Hint adds the next step.
type unreachable struct {
	err    error
	target Target
}

func (u *unreachable) Error() string { return u.err.Error() }
func (u *unreachable) Unwrap() error { return u.err }

// Timeout and Temporary are err's, for net/http and client-go's retries.
func (u *unreachable) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(u.err, &t) && t.Timeout()
}

func (u *unreachable) Temporary() bool {
	var t interface{ Temporary() bool }
	return errors.As(u.err, &t) && t.Temporary()
}

// markUnreachable has cfg's transport mark its errors as unreachable, for
// t. A cancelled request is not marked: it was the command's choice.
func markUnreachable(cfg *rest.Config, t Target) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil && !errors.Is(err, context.Canceled) {
				err = &unreachable{err: err, target: t}
			}
			return resp, err
		})
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Hint adds, to an error that says the API server could not be reached by
// Clients from NewClients, what to try next, as meshid check's api server
// row does; any other error (and nil) it returns as it is.
func Hint(err error) error {
	var u *unreachable
	if !errors.As(err, &u) {
		return err
	}
	args := []string{"kubectl"}
	if u.target.Kubeconfig != "" {
		args = append(args, "--kubeconfig", shellWord(u.target.Kubeconfig))
	}
	if u.target.Context != "" {
		args = append(args, "--context", shellWord(u.target.Context))
	}
	return fmt.Errorf("%w. Is the API server up, and is this the cluster you mean? `%s cluster-info` tells", err, strings.Join(args, " "))
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_./:=,@+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
