// Package source owns where the CA's trust material comes from: a named
// Secret or ConfigMap watched through the Kubernetes API (list and watch of
// that one name only, so RBAC can be limited to it), or files polled for
// changes. Each update is handed to a Sink; a refusal is logged and recorded
// as a Kubernetes Warning Event on the object, and the Sink keeps the last
// good material in force. A deleted or missing object, or files that cannot
// be read, are told to the source's Gone callback. A list or watch the API
// server does not answer is logged at WARN, naming the object, at most every
// 30 s (client-go says it only at debug), and told to Gone until the first
// list succeeds, so /ready can say why nothing is loaded.
//
// It knows nothing of what the material means; it must not import proxy/.
package source
