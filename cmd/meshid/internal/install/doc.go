// Package install is `meshid install`: it loads or generates the trust
// material, refuses any that does not hang together, renders the control
// plane with ca/manifest, and prints it (YAML or JSON) or applies it by
// server-side apply, refusing to replace the anchor of an existing install.
//
// It imports ca/manifest, issuer, bundle, cmd/internal/cli,
// cmd/internal/kube and its sibling output.
package install
