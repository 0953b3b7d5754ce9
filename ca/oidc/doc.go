// Package oidc owns meshid-ca's OIDC discovery documents: for an issuer
// URL the operator sets, /.well-known/openid-configuration (the issuer,
// its jwks_uri, ES256) and the JWKS of the JWT-SVID signing keys published
// at the moment of the request, both with caching headers shorter than the
// time a new key is published before it signs, so that a cloud provider
// or Vault that discovers the issuer always holds the key of a JWT it is
// shown.
//
// oidc imports no meshid package.
package oidc
