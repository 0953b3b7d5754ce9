// Package ca owns the meshid identity service: the gRPC Identity server
// (Certify, GetBundle, WatchBundle), the leaf template, audit logging and
// metrics, and the Service that wires them to their trust sources and
// serves them. Its subpackages own the parts a request passes through:
// authn (who is calling), identity (which SPIFFE ID that is), csr (what
// the caller may ask for), trust (what the CA signs with and publishes),
// source (where trust material comes from) and api (the wire types).
//
// ca imports issuer/ and rotation/; it must never import proxy/ or webhooks/.
package ca
