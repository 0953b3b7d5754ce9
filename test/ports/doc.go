// Package ports hands the harness free TCP ports on 127.0.0.1 for the
// processes it starts (meshid-ca, meshid-proxy, etcd, kube-apiserver,
// step-ca), outside the kernel's ephemeral range, so that no outgoing
// connection of any test can take a port between the moment it is handed
// out and the moment its process binds it (a port from bind(":0") can be
// taken that way: a connect() picks its local port from the same range).
// Tests only; it imports the standard library.
package ports
