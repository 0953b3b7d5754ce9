// Package cluster starts a real Kubernetes control plane on 127.0.0.1 for
// tests and demos: etcd, kube-apiserver and, optionally,
// kube-controller-manager, as child processes with their own PKI, an admin
// kubeconfig and a service-account signing key. No kubelet runs: workloads
// are local processes holding tokens minted with the TokenRequest API.
package cluster
