package clitest

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshid/meshid/cmd/internal/cli"
)

// WantUsage fails t unless err is what a validation with the given
// message should return: nil when message is empty, otherwise a
// *cli.UsageError whose text contains message. call names the function
// that returned err, for the failure message.
func WantUsage(t testing.TB, call string, err error, message string) {
	t.Helper()
	var usage *cli.UsageError
	switch {
	case message == "" && err != nil:
		t.Fatalf("%s = %v", call, err)
	case message != "" && (!errors.As(err, &usage) || !strings.Contains(err.Error(), message)):
		t.Fatalf("%s = %v, want a usage error containing %q", call, err, message)
	}
}
