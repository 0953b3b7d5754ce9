package manifest_test

import (
	"slices"
	"testing"

	"github.com/meshid/meshid/ca/manifest"
)

// TestArgsReserveTheWebhook: with meshid-webhook, meshid-ca runs with its
// service account reserved; without it, nothing more is reserved.
func TestArgsReserveTheWebhook(t *testing.T) {
	const flag = "--reserved-service-accounts=mesh/meshid-webhook"
	with := manifest.Args(manifest.Options{Namespace: "mesh", Webhook: &manifest.Webhook{ProxyImage: "p:1"}})
	if !slices.Contains(with, flag) {
		t.Fatalf("args with the webhook %q lack %s", with, flag)
	}
	without := manifest.Args(manifest.Options{Namespace: "mesh"})
	if slices.Contains(without, flag) {
		t.Fatalf("args without the webhook %q reserve its account", without)
	}
}
