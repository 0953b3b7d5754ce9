// Package catest runs meshid's own CA (package ca's Server) on loopback
// for the CLI's tests: gRPC over TLS 1.3, presenting meshid-ca's default
// SPIFFE ID, with a fixed table of tokens instead of TokenReview. It is for
// tests only.
//
// It imports ca (with ca/authn and ca/trust), issuer, identity, api and
// its sibling pkitest.
package catest
