// Package kube builds the Kubernetes clients of the commands that talk to
// the API server (meshid, meshid-ca, meshid-webhook). It is apart from
// package cli so that meshid-proxy, which never talks to the API server,
// does not link client-go: a smaller binary and a smaller idle footprint.
//
// Target (--kubeconfig, --context, as kubectl has them), Clients and
// Connect are how the meshid CLI gets its clients: built once per command
// by NewClients, and handed to fakes in tests. Hint gives an error of
// theirs that says the API server could not be reached its next step.
package kube
