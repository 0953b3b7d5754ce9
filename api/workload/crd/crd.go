// Package crd holds the ExternalWorkload CustomResourceDefinition that
// `make generate` writes (controller-gen), for `meshid install` to render.
package crd

import _ "embed"

// ExternalWorkload is the CRD of meshid.dev/v1alpha1 ExternalWorkload.
//
//go:embed meshid.dev_externalworkloads.yaml
var ExternalWorkload []byte
