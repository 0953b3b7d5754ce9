// Package identity owns the one mapping between Kubernetes service accounts
// and SPIFFE IDs: system:serviceaccount:NS:SA is
// spiffe://TRUST_DOMAIN/ns/NS/sa/SA, and nothing else is a workload identity.
// Every part of meshid that builds or reads a workload's ID calls it. It also
// holds the defaults every component shares: the trust domain and the token
// audience (DefaultTrustDomain, DefaultAudience).
//
// It imports nothing from meshid.
package identity
