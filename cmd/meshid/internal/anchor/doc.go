// Package anchor is `meshid rotate-anchor`: the glue between its flags and
// rotation/anchor, which owns the rotation itself. It builds the Rotator,
// asks it whether a start can go ahead before it generates (or after it
// reads) the new anchor, prints plan, status (exit 1 when the rotation is
// stuck) and what abort --force left, and with -o json turns the
// Rotator's progress events into one JSON object a line, then a summary.
//
// It imports rotation/anchor, issuer, cmd/internal/cli, cmd/internal/kube
// and its sibling output.
package anchor
