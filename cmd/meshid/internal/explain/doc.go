// Package explain is `meshid policy explain`: the decision meshid-proxy
// would make on one connection or request (policy.Port.Check, the proxy's
// own code), with the rule that decided or the one that is missing, from
// the cluster's live AuthorizationPolicies for a pod (merged as meshid-ca
// merges them: policy.FromSpec, policy.Merge) or from a proxy's --policy
// file.
//
// It imports policy, identity, api/policy, cmd/internal/cli,
// cmd/internal/kube and its sibling output.
package explain
