// Package identity owns the one mapping between Kubernetes service accounts
// and SPIFFE IDs: system:serviceaccount:NS:SA is
// spiffe://TRUST_DOMAIN/ns/NS/sa/SA, and nothing else is a workload identity.
// Every part of meshid that builds or reads a workload's ID calls it.
//
// It imports nothing from meshid.
package identity
