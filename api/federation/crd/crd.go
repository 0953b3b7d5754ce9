// Package crd holds the FederatedTrustDomain CustomResourceDefinition that
// `make generate` writes (controller-gen), for `meshid install` to render.
package crd

import _ "embed"

// FederatedTrustDomain is the CRD of meshid.dev/v1alpha1 FederatedTrustDomain.
//
//go:embed meshid.dev_federatedtrustdomains.yaml
var FederatedTrustDomain []byte
