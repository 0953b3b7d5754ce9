// Package anchor is `meshid rotate-anchor`: the glue between its flags and
// rotation/anchor, which owns the rotation itself. It builds the Rotator,
// generates or reads the new anchor for start, and prints plan and status.
//
// It imports rotation/anchor, issuer, cmd/internal/cli, cmd/internal/kube
// and its sibling output.
package anchor
