// Package webhooks holds meshid's admission webhooks: inject owns the
// sidecar injection decision and the pod mutation (a pure function of the
// pod, its namespace's labels and the configuration); admission owns the
// server (injection, AuthorizationPolicy validation) and its serving
// certificate.
//
// webhooks may use the API types in ca/api and the policy checks in
// proxy/policy; nothing imports webhooks.
package webhooks
