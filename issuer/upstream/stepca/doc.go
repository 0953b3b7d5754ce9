// Package stepca is the step-ca upstream: an upstream.Authority that asks a
// smallstep step-ca for meshid-ca's intermediate with a JWK provisioner's
// one-time token. It makes step-ca's two calls (/health, /1.0/sign) with
// net/http and go.step.sm/crypto/jose rather than smallstep's `ca` client,
// which would add about 17 MB to meshid-ca and modules with known
// vulnerabilities for two JSON requests (docs/ca.md says why).
//
// stepca imports issuer/upstream and shared nouns; it must not import ca/,
// proxy/, webhooks/ or rotation/.
package stepca
