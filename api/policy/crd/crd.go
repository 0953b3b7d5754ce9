// Package crd holds the CustomResourceDefinitions that `make generate`
// writes (controller-gen), for `meshid install` to render.
package crd

import _ "embed"

// AuthorizationPolicy is the CRD of meshid.dev/v1alpha1 AuthorizationPolicy.
//
//go:embed meshid.dev_authorizationpolicies.yaml
var AuthorizationPolicy []byte
