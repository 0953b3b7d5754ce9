// Package verify is `meshid verify`: a real mTLS handshake to an endpoint,
// as a service account (a token from the TokenRequest API and a
// certificate from meshid-ca) or with a certificate the operator has, that
// reports who answered, the chain, the anchor that validated it, and
// whether the server accepted us (or never asked for our certificate: not
// mTLS). It offers meshid's ALPN (sidecar.ALPN), so a transparent pod's
// proxy takes it for a meshed peer on any app port, and says when the
// server chose it. A CA it cannot reach is said with how to reach it from
// a workstation.
//
// It imports rotation (the client side of issuance), api, bundle, sidecar,
// cmd/internal/cli, cmd/internal/kube and its siblings certinfo and output.
package verify
