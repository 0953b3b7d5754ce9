// Package manifest owns what `meshid install` renders: the Kubernetes
// objects of a meshid control plane (namespace, service accounts,
// least-privilege RBAC and the admission policies that narrow what RBAC
// cannot name, the meshid-ca Deployment and Service, the trust bundle, the
// issuer or the cert-manager objects that manage it, the alert rules
// (each tested by promtool: testdata/alerts_test.yaml), a Grafana dashboard
// (grafana-dashboard.json, embedded), meshid-webhook, and the
// ExternalWorkload CRD), built as typed API objects from Options.
//
// It only builds objects; checking the trust material and applying the
// objects are the caller's. It imports shared nouns (api/policy/crd and
// api/workload/crd for the CRDs it installs, bundle for the bundle
// ConfigMap's key and copy label), ca/fleet (the fleet report names the
// CA may write) and ca/external (the label of the EndpointSlices it may
// write); it must not import proxy/ or webhooks/.
package manifest
