// Package anchor owns trust-anchor rotation: the staged, resumable
// procedure behind `meshid rotate-anchor` that replaces the anchor every
// workload trusts without a moment in which any two of them disagree.
//
//	Add          publish old + new anchors; wait until every proxy and CA
//	             replica holds that bundle
//	SwitchIssuer issue the issuer from the new anchor (or have cert-manager
//	             do it); wait until every CA replica signs with it
//	Reissue      ask proxies to renew within a window; wait until every live
//	             leaf comes from the new issuer
//	Remove       publish the new anchor alone; wait until every proxy holds it
//	Done         a final check and a summary
//
// A stage advances only when the fleet view (the proxies' own reports, as
// published by every CA replica) says it converged, never on a timer. The
// state lives in the cluster (ConfigMap meshid-rotation, and Secret
// meshid-rotation for keys), so a rerun or a second operator resumes it, and
// every stage is idempotent. Abort goes back from any stage before Remove.
//
// Decisions and IO are apart. Next (decide.go) is a pure function of what
// is observed: the stored state, the bundle ConfigMap, the issuer Secret
// (and cert-manager's anchor Secret), the merged fleet view, what this run
// has waited for, and the time; it says wait (for what, in the words the
// CLI prints), act (one write), advance, or fail (a typed Reason, and a
// hint). The Rotator's loop (loop.go) observes, asks Next, does what it
// says, and waits on conditions: until a ConfigMap or Secret of the
// namespace changes, the wait's deadline passes on the injected clock, or
// Config.Poll goes by.
//
// It imports ca/manifest and ca/fleet for the objects meshid-ca reads and
// publishes, rotation/health, issuer/ and bundle; never proxy/ or
// webhooks/.
package anchor
