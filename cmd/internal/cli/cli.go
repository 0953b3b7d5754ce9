package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes of every meshid command.
const (
	ExitOK      = 0 // success
	ExitProblem = 1 // the command ran and found a problem, or failed
	ExitUsage   = 2 // the command line was wrong
)

// ExitCodes is the help text that documents the exit codes.
const ExitCodes = `Exit codes:
  0  success
  1  a problem was found, or the command failed
  2  usage error (bad flags or arguments)`

// UsageError marks an error in the command line: the command exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// SilentError exits 1 without printing: the command already reported the
// problem in its output.
type SilentError struct{ Err error }

func (e *SilentError) Error() string { return e.Err.Error() }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Main runs cmd with a context cancelled on SIGINT or SIGTERM and exits with
// the documented code.
func Main(cmd *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.ExecuteContext(ctx)
	stop()
	os.Exit(Code(cmd.ErrOrStderr(), err))
}

// Code prints err (if any) to w, as Message says it, and returns the exit
// code for it.
func Code(w io.Writer, err error) int {
	if err == nil {
		return ExitOK
	}
	var silent *SilentError
	if errors.As(err, &silent) {
		return ExitProblem
	}
	fmt.Fprintln(w, "Error:", Message(err))
	var u *UsageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	return ExitProblem
}

// Setup makes cobra's own flag errors usage errors, stops it printing
// usage on every failure, and gives the command --version (see
// SetVersion). Call it on the root command.
func Setup(root *cobra.Command) {
	SetVersion(root)
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &UsageError{Err: fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
}

// LogOptions are the logging flags.
type LogOptions struct {
	Format string
	Level  string
}

// AddFlags binds the logging flags.
func (o *LogOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Format, "log-format", "json", "log format: json or text")
	fs.StringVar(&o.Level, "log-level", "info", "log level: debug, info, warn or error")
}

// Logger builds the logger the flags describe, writing to w.
func (o *LogOptions) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.Level)); err != nil {
		return nil, Usagef("--log-level %q: use debug, info, warn or error", o.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(o.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %q: use json or text", o.Format)
}

// NoArgs is cobra.NoArgs as a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("%s takes no arguments, got %q (see %s --help)", cmd.CommandPath(), args, cmd.CommandPath())
	}
	return nil
}
