package ca_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/fleet"
)

// TestFleetConfigMapsWrite: a fleet ConfigMap is created once, then
// updated over what was last written with no read first; one deleted
// behind the writer's back is read again and written. (A conflict on a
// changed one takes the same path; the fake clientset does not check
// resourceVersions.)
func TestFleetConfigMapsWrite(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	api := client.CoreV1().ConfigMaps("meshid")
	cms := ca.NewFleetConfigMaps(api, "meshid")
	name := fleet.ShardName(ca.FleetConfigMapName("ca-0"), 0)
	verbs := func() []string {
		var out []string
		for _, a := range client.Actions() {
			out = append(out, a.GetVerb())
		}
		client.ClearActions()
		return out
	}
	read := func() string {
		cm, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Labels[fleet.Label] != "true" {
			t.Fatalf("labels %v, want %s=true", cm.Labels, fleet.Label)
		}
		client.ClearActions()
		return cm.Data[fleet.ShardKey]
	}
	for _, step := range []struct {
		name, data string
		before     func()
		want       []string
	}{
		{name: "first write", data: "one", want: []string{"get", "create"}},
		{name: "again", data: "two", want: []string{"update"}},
		{name: "deleted meanwhile", data: "three", before: func() { _ = api.Delete(ctx, name, metav1.DeleteOptions{}) }, want: []string{"update", "get", "create"}},
	} {
		if step.before != nil {
			step.before()
			client.ClearActions()
		}
		if err := cms.Put(ctx, name, fleet.ShardKey, []byte(step.data)); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := verbs()
		if len(got) != len(step.want) {
			t.Fatalf("%s: %v, want %v", step.name, got, step.want)
		}
		for i := range got {
			if got[i] != step.want[i] {
				t.Fatalf("%s: %v, want %v", step.name, got, step.want)
			}
		}
		if d := read(); d != step.data {
			t.Fatalf("%s: the ConfigMap holds %q, want %q", step.name, d, step.data)
		}
	}
}
