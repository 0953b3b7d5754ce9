// Package cli owns what every meshid command shares: the signal-aware main
// loop, the documented exit codes, usage errors and how an error is said to
// the operator (Message: no internal package prefixes; CAUnreachable and
// CannotReachCA: a meshid-ca not reached, said the same by every command), the build's version
// (--version, `meshid version`, the line a daemon logs at start), the marks
// and colour of a result on a terminal (Style), and the slog logger the
// --log-format and --log-level flags build.
package cli
