package test_test

import (
	"testing"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/proxy/redirect"
	"github.com/meshid/meshid/webhooks/inject"
)

// TestTransparentContract: the siblings never import each other, so the
// names and numbers of transparent interception they share are written
// in each; they must agree.
func TestTransparentContract(t *testing.T) {
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"transparent annotation (ca, inject)", ca.TransparentAnnotation, inject.TransparentAnnotation},
		{"skip-inbound annotation (ca, inject)", ca.SkipInboundAnnotation, inject.SkipInboundPortsAnnotation},
		{"proxy admin port (ca, inject)", ca.DefaultProxyAdminPort, inject.AdminPort},
		{"proxy admin port (redirect, inject)", redirect.DefaultAdminPort, inject.AdminPort},
		{"proxy UID (redirect, inject)", redirect.DefaultProxyUID, inject.ProxyUID},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v != %v", c.what, c.got, c.want)
		}
	}
}
