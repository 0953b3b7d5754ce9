// Package policy owns the proxy's authorization policy: which peers may
// connect to each inbound port. A policy is YAML (see Parse for the format),
// checked strictly, and compiled once into a value whose Authorize is a
// go-spiffe tlsconfig.Authorizer; swapping policies is swapping pointers.
//
// It imports ca/identity (namespace and service-account rules name
// identities the way the CA mints them) and nothing else from meshid.
package policy
