// Package webhooks holds meshid's admission webhooks. Its subpackage
// inject owns the sidecar injection decision and the pod mutation (a pure
// function of the pod, its namespace's labels and the configuration); the
// admission server, its serving certificate and the AuthorizationPolicy
// validation come with the webhook issue.
//
// webhooks must not import ca/ or proxy/ beyond their public names.
package webhooks
