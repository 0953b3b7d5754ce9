// Package explain is `meshid policy explain`: the decision meshid-proxy
// would make on one connection or request (policy.Port.Check, the proxy's
// own code), with the rule that decided or the one that is missing, from
// the cluster's live AuthorizationPolicies for a pod (merged as meshid-ca
// merges them: ca/policies.FileFor) or from a proxy's --policy
// file; and `meshid policy list`: per pod and port, who may connect and
// what they may ask (Rows, from the same merge).
//
// It imports policy, identity, api/policy, ca/policies, cmd/internal/cli,
// cmd/internal/kube and its sibling output.
package explain
