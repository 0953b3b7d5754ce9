// Package install is `meshid install`: it reads or generates the trust
// material, refuses any that does not hang together, renders the control
// plane with ca/manifest, and prints it (YAML or JSON) or applies it by
// server-side apply. Everything it can check comes before a key is
// generated: the --write-anchor-key path (a new file in a folder that
// exists), the operator's material, and with --apply the cluster (no
// install in the namespace when the anchor is new, none trusting other
// anchors than the operator's own, every kind served).
//
// It imports ca/manifest, issuer, bundle, cmd/internal/cli,
// cmd/internal/kube and its sibling output.
package install
