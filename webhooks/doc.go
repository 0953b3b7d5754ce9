// Package webhooks holds meshid's admission webhooks: inject owns the
// sidecar injection decision and the pod mutation (a pure function of the
// pod, its namespace's labels and the configuration); admission owns the
// server (injection, AuthorizationPolicy validation) and its serving
// certificate.
//
// webhooks may use shared nouns (the API types in api/, the policy model
// in policy) and issuer/; it never imports ca/ or proxy/, and nothing
// imports webhooks.
package webhooks
