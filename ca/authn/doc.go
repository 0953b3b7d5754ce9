// Package authn owns caller authentication for the CA: it proves who a
// workload is by asking the Kubernetes API server to review its
// service-account token (TokenReview, always naming the CA's audience) and
// maps the result to a SPIFFE ID with package identity. A token issued for
// other audiences besides the CA's is refused unless the operator allows
// it: any of those other services could replay it to the CA.
//
// A refusal is an *Error whose Detail, for the caller, is a fixed message
// per case; what the API server said (it names service-account and pod
// UIDs) is kept in what the CA logs.
//
// Positive reviews are cached briefly, keyed by the token's SHA-256 (the
// token itself is never stored or logged), bounded in size, and never past
// the token's own expiry. Identical reviews in flight are made once.
//
// It imports identity; it must not import proxy/ or webhooks/.
package authn
