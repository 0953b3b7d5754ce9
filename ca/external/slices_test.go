package external_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/ca/external"
)

func TestSlices(t *testing.T) {
	svc := func(name string, sel map[string]string, ports ...corev1.ServicePort) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.ServiceSpec{Selector: sel, Ports: ports}}
	}
	vm := v1alpha1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "vm-1", UID: "u1", Labels: map[string]string{"app": "db", "tier": "data"}},
		Spec: v1alpha1.ExternalWorkloadSpec{ServiceAccount: "db", Addresses: []string{"10.0.0.7", "fd00::7", "not-an-ip", "127.0.0.1", "169.254.1.1", "::1"},
			Ports: []v1alpha1.ExternalWorkloadPort{{Name: "pg", Port: 5432}}},
	}
	other := vm
	other.Namespace = "elsewhere"
	got := external.Slices([]corev1.Service{
		svc("db", map[string]string{"app": "db"}, corev1.ServicePort{Name: "sql", Port: 5432, TargetPort: intstr.FromString("pg")}, corev1.ServicePort{Name: "metrics", Port: 9090}),
		svc("web", map[string]string{"app": "web"}, corev1.ServicePort{Port: 80}),
		svc("headless-all", nil, corev1.ServicePort{Port: 5432}),
		svc("by-number", map[string]string{"tier": "data"}, corev1.ServicePort{Port: 15432, TargetPort: intstr.FromInt32(5432)}),
	}, []v1alpha1.ExternalWorkload{vm, other})
	want := map[string]struct {
		fam  discoveryv1.AddressType
		addr string
		port int32
		name string
	}{
		"by-number.vm-1":    {discoveryv1.AddressTypeIPv4, "10.0.0.7", 5432, ""},
		"by-number.vm-1-v6": {discoveryv1.AddressTypeIPv6, "fd00::7", 5432, ""},
		"db.vm-1":           {discoveryv1.AddressTypeIPv4, "10.0.0.7", 5432, "sql"},
		"db.vm-1-v6":        {discoveryv1.AddressTypeIPv6, "fd00::7", 5432, "sql"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d slices; want %d: %+v", len(got), len(want), got)
	}
	for _, s := range got {
		w, ok := want[s.Name]
		if !ok {
			t.Fatalf("unexpected slice %s", s.Name)
		}
		if s.Namespace != "shop" || s.AddressType != w.fam || len(s.Endpoints) != 1 || s.Endpoints[0].Addresses[0] != w.addr ||
			len(s.Ports) != 1 || *s.Ports[0].Port != w.port || *s.Ports[0].Name != w.name {
			t.Errorf("slice %s: %+v; want %+v (metrics 9090 left out: vm-1 does not list it)", s.Name, s, w)
		}
		if s.Labels[discoveryv1.LabelManagedBy] != external.ManagedBy || s.Labels[external.ServiceAccountLabel] != "db" ||
			len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != "u1" || s.Endpoints[0].TargetRef.Kind != "ExternalWorkload" {
			t.Errorf("slice %s: labels %v, owners %v", s.Name, s.Labels, s.OwnerReferences)
		}
	}
	deleting := vm
	deleting.DeletionTimestamp = &metav1.Time{}
	if got := external.Slices([]corev1.Service{svc("db", map[string]string{"app": "db"}, corev1.ServicePort{Port: 5432})}, []v1alpha1.ExternalWorkload{deleting}); len(got) != 0 {
		t.Fatalf("a workload being deleted is published: %+v", got)
	}
}
