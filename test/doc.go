// Package test holds meshid's end-to-end harness and tests: cluster starts
// a real etcd and kube-apiserver (and kube-controller-manager) on
// 127.0.0.1 from binaries that controlplane/install.sh builds and caches;
// cmd/cluster runs one in the background for `make cluster`; node plays a
// Kubernetes node in network namespaces; e2e holds the tests that drive
// meshid's real binaries against them.
package test
