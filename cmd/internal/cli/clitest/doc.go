// Package clitest holds what the commands' tests share about cli's errors:
// the check that an Options.Validate refused with a usage error saying what
// was wrong. Tests only; it imports cli and the standard library.
package clitest
