// Package issuer owns the signing backends of the CA. Signer is the seam
// every key source plugs into: the CA describes a leaf (LeafParams), a
// Signer signs it (LeafTemplate builds it the same for all of them, its
// lifetime capped at the signer's own) and returns it with its chain
// (Issued). The trust checks (CheckValidity, Verify, ChainExpiry) use only
// what a Signer exposes, its Certificate and UpstreamChain.
//
// KeyPair is the local backend, an intermediate CA certificate with its
// private key, loaded from a kubernetes.io/tls Secret or from files; its
// key is any crypto.Signer. It also generates CA material (anchors and
// intermediates) for installs that bring none, and for tests (issuertest
// builds on it).
//
// A KeyPair is validated when it is made (Parse) and against the trust
// bundle before it is used (Verify); it never changes afterwards, so hot
// reload is an atomic swap of one pointer, done by the caller.
//
// It also owns when a leaf is renewed (RenewAt), which the CA uses to pace
// renewals and clients fall back on.
//
// issuer imports bundle; it must not import ca/, proxy/, webhooks/ or
// rotation/.
package issuer
