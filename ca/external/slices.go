package external

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/api/workload/v1alpha1"
)

// Labels of the EndpointSlices meshid-ca publishes for ExternalWorkloads.
const (
	// ManagedBy is the endpointslice.kubernetes.io/managed-by value, so
	// Kubernetes' own EndpointSlice controller leaves them alone.
	ManagedBy = "externalworkloads.meshid.dev"
	// WorkloadLabel names the ExternalWorkload a slice is for.
	WorkloadLabel = "meshid.dev/external-workload"
	// ServiceAccountLabel names its service account: discovery tells
	// transparent proxies the endpoint is meshed as that identity.
	ServiceAccountLabel = "meshid.dev/service-account"
)

// Slices are the EndpointSlices that put the ExternalWorkloads behind the
// Services whose selector matches their labels, as pods are: one per
// Service, workload and address family; each endpoint ready, referring to
// its ExternalWorkload, which owns the slice (deleting it deletes them).
// A Service port whose targetPort the workload does not list (by number,
// or by name) is left out; a workload that lists no ports serves every
// targetPort number. Addresses the API server refuses in a slice
// (loopback, link-local, unspecified, multicast) are left out.
func Slices(svcs []corev1.Service, ws []v1alpha1.ExternalWorkload) []discoveryv1.EndpointSlice {
	var out []discoveryv1.EndpointSlice
	for _, svc := range svcs {
		if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, w := range ws {
			if w.Namespace != svc.Namespace || w.DeletionTimestamp != nil || !sel.Matches(labels.Set(w.Labels)) {
				continue
			}
			ports := slicePorts(svc, w)
			if len(ports) == 0 {
				continue
			}
			for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
				var eps []discoveryv1.Endpoint
				for _, a := range w.Spec.Addresses {
					ip, err := netip.ParseAddr(a)
					if err != nil || !publishable(ip) || (fam == discoveryv1.AddressTypeIPv4) != ip.Unmap().Is4() {
						continue
					}
					eps = append(eps, discoveryv1.Endpoint{
						Addresses:  []string{ip.Unmap().String()},
						Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
						TargetRef:  &corev1.ObjectReference{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ExternalWorkload", Namespace: w.Namespace, Name: w.Name, UID: w.UID},
					})
				}
				if len(eps) == 0 {
					continue
				}
				out = append(out, discoveryv1.EndpointSlice{
					TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
					ObjectMeta: metav1.ObjectMeta{
						Name: sliceName(svc.Name, w.Name, fam), Namespace: w.Namespace,
						Labels: map[string]string{
							discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy,
							WorkloadLabel: w.Name, ServiceAccountLabel: w.Spec.ServiceAccount,
						},
						OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ExternalWorkload", Name: w.Name, UID: w.UID}},
					},
					AddressType: fam, Endpoints: eps, Ports: ports,
				})
			}
		}
	}
	slices.SortFunc(out, func(a, b discoveryv1.EndpointSlice) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// publishable: the API server refuses loopback, link-local and
// unspecified endpoint addresses (a workload on this machine's loopback
// is reached directly, not through a Service).
func publishable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() && !ip.IsUnspecified() && !ip.IsMulticast()
}

func slicePorts(svc corev1.Service, w v1alpha1.ExternalWorkload) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		port := int32(0)
		switch tp := sp.TargetPort; {
		case tp.StrVal != "":
			for _, p := range w.Spec.Ports {
				if p.Name == tp.StrVal {
					port = p.Port
				}
			}
		default:
			want := tp.IntVal
			if want == 0 {
				want = sp.Port
			}
			if len(w.Spec.Ports) == 0 || slices.ContainsFunc(w.Spec.Ports, func(p v1alpha1.ExternalWorkloadPort) bool { return p.Port == want }) {
				port = want
			}
		}
		if port == 0 {
			continue
		}
		out = append(out, discoveryv1.EndpointPort{Name: ptr.To(sp.Name), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	return out
}

// sliceName is SERVICE.WORKLOAD (-v6 for IPv6), or a hash of it when that
// is too long for a name.
func sliceName(svc, w string, fam discoveryv1.AddressType) string {
	n := svc + "." + w // a Service name has no dot: no two pairs collide
	if fam == discoveryv1.AddressTypeIPv6 {
		n += "-v6"
	}
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return svc + "-ext-" + hex.EncodeToString(sum[:8])
}
