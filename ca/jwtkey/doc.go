// Package jwtkey owns the CA's JWT-SVID signing keys: their lifecycle
// (published before first use, active, retiring after the longest JWT
// lifetime, then dropped), decided by the pure Next(keys, now, Policy); their
// encoding in the cluster (Marshal/Unmarshal of the key Secret's data, so
// every replica reads the same set); signing a JWT-SVID with the key active
// at now (go-jose, ES256); and the public keys to publish (JWKS).
//
// A key is published in the same write that creates it (there is no
// unpublished "prepared" state an outside reader could see): it is created
// PublishLead before it becomes active, so verifiers that cache the JWKS
// hold it before the first JWT it signs. It stays published MaxTTL after it
// stops signing, so no JWT inside its lifetime loses its key.
//
// jwtkey imports shared nouns only; it must not import proxy/, webhooks/ or
// rotation/.
package jwtkey
