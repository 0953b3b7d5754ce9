// Package ca owns the meshid identity service: the gRPC Identity server
// (Certify, GetBundle, WatchBundle, MintJWTSVID, and JoinExternal and
// RenewExternal for ExternalWorkloads: external.go), the steps of a Certify (authenticate,
// check, sign through the issuer.Signer in force, audit, answer), metrics,
// and the Service that wires them to their trust sources and
// serves them. Its subpackages own the parts a request passes through:
// authn (who is calling), csr (what the caller may ask for), trust (what
// the CA signs with and publishes), source (where trust material comes
// from), jwtkey (the JWT-SVID signing keys, synced through one Secret by
// jwtservice.go), oidc (the discovery documents, --oidc-listen), external
// (the join token and the checks of an ExternalWorkload's join and
// renewal), limit (per-caller rate limits), fleet (what the proxies report),
// policies (which AuthorizationPolicies select a pod), endpoint (our SPIFFE
// bundle endpoint), foreign (fetching and checking a foreign trust domain's
// bundle) and manifest (what `meshid install` renders). Federated
// (federated.go) keeps the foreign bundles in force from the
// FederatedTrustDomains' status, fetches them when due and stores what it
// fetched there; the bundle messages carry them. The wire types are api/'s, the SPIFFE-ID
// mapping identity's, the bundle bundle's.
//
// ca imports issuer/ and shared nouns; it must never import rotation/,
// proxy/ or webhooks/.
package ca
