// Package cli owns what every meshid command shares: the signal-aware main
// loop, the documented exit codes, usage errors, and the slog logger the
// --log-format and --log-level flags build.
package cli
