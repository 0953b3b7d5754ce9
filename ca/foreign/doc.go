// Package foreign owns meshid-ca's side of the foreign bundles it trusts:
// fetching one from a peer's SPIFFE bundle endpoint (either profile, with
// size and time limits), the checks on what it answered (the right trust
// domain, anchors present and unexpired, none of ours), when to fetch again
// (the refresh hint, a doubling backoff after a failure), and the reasons a
// fetch is refused, each a metric label.
//
// It uses go-spiffe's spiffebundle and tlsconfig. It does not call
// federation.FetchBundle: that reads the whole answer into memory whatever
// its size and parses an answer of any HTTP status, and it takes no
// transport to limit either; Fetch does what it does (a GET, the same TLS
// configuration for each profile, spiffebundle.Read) within limits.
//
// foreign imports shared nouns (bundle) and go-spiffe; it never imports
// issuer/, rotation/, proxy/ or webhooks/, nor Kubernetes: package ca
// stores what it fetched.
package foreign
