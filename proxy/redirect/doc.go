// Package redirect owns transparent interception in a pod's network
// namespace: the nftables rule set that sends the pod's inbound TCP to the
// proxy's inbound listener and its outbound TCP to the proxy's outbound
// listener (except the proxy's own traffic, loopback, and what the pod's
// annotations exclude), programming it through netlink and reading it back
// (meshid-init), the State meshid-init writes of what it programmed and
// read back for the proxy (which cannot read nftables: that takes
// CAP_NET_ADMIN), and reading a redirected connection's original
// destination (meshid-proxy).
//
// The rule set is built as values (Rules) before it is programmed, so it is
// tested without a kernel; Apply and Remove program it in one nftables
// transaction, and Verify compares the kernel's table with it. It imports
// only the shared noun sidecar.
package redirect
