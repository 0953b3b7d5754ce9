package bundle

// Keys of the trust-bundle ConfigMap (and of the files that stand in for it).
const (
	// Key holds the PEM trust anchors.
	Key = "ca-bundle.crt"
	// ReissueWindowKey, when set ("30s"), asks proxies whose leaf comes from
	// another issuer than the CA's current one to renew within that long.
	ReissueWindowKey = "reissue-window"
)

// CopyLabel marks a copy of the trust-bundle ConfigMap (value "copy") that
// meshid-webhook keeps in a workload namespace for pods to mount.
const CopyLabel = "meshid.dev/trust-bundle"
