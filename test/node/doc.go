// Package node plays a Kubernetes node for tests, where no kubelet runs.
// The node is a network namespace holding a bridge (its address is the
// node's, status.hostIP); every Pod it runs gets a network namespace of its
// own with one address on that bridge. Nothing is routed to the machine's
// own namespace: only those addresses and loopback are dialled, and pods
// reach the machine's loopback (the CA) only through forwarders the node
// owns.
//
// For a Pod it is given, the node does what a kubelet would, from the Pod
// object as the API server stored it (injected by the real webhook): it
// runs the init containers to completion (meshid-init programs the
// redirect), then the containers, as processes inside the pod's namespace
// with the container's user; it fills projected service-account tokens
// (TokenRequest, bound to the pod) and ConfigMap volumes into a folder per
// volume (an emptyDir is an empty one) and points the arguments that name
// a mount path there; it runs
// each container's HTTP readiness probe from the node's address, and
// writes the Pod's status (podIP, hostIP, Ready) back, so the real
// EndpointSlice controller publishes it.
//
// Only tests import it; it may import anything.
package node
