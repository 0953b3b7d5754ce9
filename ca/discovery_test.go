package ca_test

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/sidecar"
)

func pod(name, ip string, annotations map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: annotations},
		Spec:       corev1.PodSpec{ServiceAccountName: name},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

var transparent = map[string]string{sidecar.TransparentAnnotation: "enabled", sidecar.SkipInboundPortsAnnotation: "9100"}

func discoveryFixture(t *testing.T) (*ca.Discovery, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(
		pod("web", "10.1.0.1", transparent),
		pod("legacy", "10.1.0.2", nil),
		pod("db", "10.1.0.3", transparent, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }),
		pod("node-agent", "10.9.0.1", transparent, func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		pod("done", "10.1.0.4", transparent, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.10", ClusterIPs: []string{"10.0.0.10"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
				{Addresses: []string{"10.1.0.1"}},
				{Addresses: []string{"10.1.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "vm"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.11", ClusterIPs: []string{"10.0.0.11"},
				Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}},
		},
		// Published by meshid-ca for ExternalWorkload vm-1 (external.Slices).
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "vm.vm-1", Labels: map[string]string{
				discoveryv1.LabelServiceName: "vm", discoveryv1.LabelManagedBy: external.ManagedBy, external.ServiceAccountLabel: "vm"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](8443), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		},
	)
	d, err := ca.NewDiscovery(ca.DiscoveryConfig{
		Client: client, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Authenticate: func(context.Context) (spiffeid.ID, error) {
			return spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !d.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("discovery informers did not sync")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition: no event reports it
	}
	return d, client
}

func TestDiscoveryLookup(t *testing.T) {
	d, _ := discoveryFixture(t)
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"a transparent pod is meshed", "10.1.0.1:8080",
			`address:"10.1.0.1:8080" kind:POD endpoints:{address:"10.1.0.1:8080" meshed:true spiffe_id:"spiffe://cluster.local/ns/shop/sa/web"}`},
		{"a port it skips is plain", "10.1.0.1:9100", `address:"10.1.0.1:9100" kind:POD endpoints:{address:"10.1.0.1:9100"}`},
		{"the proxy's admin port is plain", "10.1.0.1:15000", `address:"10.1.0.1:15000" kind:POD endpoints:{address:"10.1.0.1:15000"}`},
		{"a pod without interception is plain", "10.1.0.2:8080", `address:"10.1.0.2:8080" kind:POD endpoints:{address:"10.1.0.2:8080"}`},
		{"no service account is default", "10.1.0.3:5432",
			`address:"10.1.0.3:5432" kind:POD endpoints:{address:"10.1.0.3:5432" meshed:true spiffe_id:"spiffe://cluster.local/ns/shop/sa/default"}`},
		{"a host-network pod's address is the node's", "10.9.0.1:80", `address:"10.9.0.1:80" kind:EXTERNAL endpoints:{address:"10.9.0.1:80"}`},
		{"a finished pod no longer owns its address", "10.1.0.4:80", `address:"10.1.0.4:80" kind:EXTERNAL endpoints:{address:"10.1.0.4:80"}`},
		{"a Service has its ready endpoints, on the target port", "10.0.0.10:80",
			`address:"10.0.0.10:80" kind:SERVICE endpoints:{address:"10.1.0.1:8080" meshed:true spiffe_id:"spiffe://cluster.local/ns/shop/sa/web"} endpoints:{address:"10.1.0.2:8080"}`},
		{"an ExternalWorkload behind a Service is meshed as its service account", "10.0.0.11:443",
			`address:"10.0.0.11:443" kind:SERVICE endpoints:{address:"192.0.2.10:8443" meshed:true spiffe_id:"spiffe://cluster.local/ns/shop/sa/vm"}`},
		{"a port the Service does not serve has nothing", "10.0.0.10:81", `address:"10.0.0.10:81" kind:EXTERNAL`},
		{"an address outside the cluster", "192.0.2.1:443", `address:"192.0.2.1:443" kind:EXTERNAL endpoints:{address:"192.0.2.1:443"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := prototext.MarshalOptions{}.Format(d.Lookup(netip.MustParseAddrPort(tc.addr)))
			want := prototext.MarshalOptions{}.Format(mustText(t, tc.want))
			if got != want {
				t.Errorf("Lookup(%s) = %s\nwant %s", tc.addr, got, want)
			}
		})
	}
}

func mustText(t *testing.T, s string) *identityv1.Destination {
	t.Helper()
	var d identityv1.Destination
	if err := prototext.Unmarshal([]byte(s), &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestWatchDestinations: a subscription is answered at once and again when
// what is behind the address changes; a malformed address is refused.
// watch serves d on loopback and opens a WatchDestinations stream to it.
func watch(ctx context.Context, t *testing.T, d *ca.Discovery) identityv1.Discovery_WatchDestinationsClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	identityv1.RegisterDiscoveryServer(srv, d)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := identityv1.NewDiscoveryClient(conn).WatchDestinations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func TestWatchDestinations(t *testing.T) {
	d, client := discoveryFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream := watch(ctx, t, d)
	if err := stream.Send(&identityv1.DestinationsRequest{Subscribe: []string{"10.1.0.2:8080"}}); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || msg.GetKind() != identityv1.Destination_POD || msg.GetEndpoints()[0].GetMeshed() {
		t.Fatalf("first answer: %v, %v; want the plain pod", msg, err)
	}
	// The pod is re-created with interception: the stream says so.
	legacy := pod("legacy", "10.1.0.2", map[string]string{sidecar.TransparentAnnotation: "enabled"})
	if _, err := client.CoreV1().Pods("shop").Update(ctx, legacy, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	msg, err = stream.Recv()
	if err != nil || !msg.GetEndpoints()[0].GetMeshed() || msg.GetEndpoints()[0].GetSpiffeId() != "spiffe://cluster.local/ns/shop/sa/legacy" {
		t.Fatalf("after the update: %v, %v; want the meshed pod", msg, err)
	}
	if err := stream.Send(&identityv1.DestinationsRequest{Subscribe: []string{"not-an-address"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a malformed address: %v, want InvalidArgument", err)
	}
}

// TestWatchDestinationsWaitsForSync: a stream opened before the informers
// synced gets no header and no answer until they have; then the synced
// header comes first.
func TestWatchDestinationsWaitsForSync(t *testing.T) {
	client := fake.NewClientset(pod("web", "10.1.0.1", transparent))
	release := make(chan struct{})
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release // the first list of Pods is slow
		return false, nil, nil
	})
	d, err := ca.NewDiscovery(ca.DiscoveryConfig{
		Client: client, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Authenticate: func(context.Context) (spiffeid.ID, error) {
			return spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = d.Run(runCtx) }()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() { unblock(); stop(); <-ran })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream := watch(ctx, t, d)
	if err := stream.Send(&identityv1.DestinationsRequest{Subscribe: []string{"10.1.0.1:8080"}}); err != nil {
		t.Fatal(err)
	}
	header := make(chan metadata.MD, 1)
	go func() { md, _ := stream.Header(); header <- md }()
	select {
	case md := <-header:
		t.Fatalf("header %v before the informers synced", md)
	case <-time.After(300 * time.Millisecond): // a bounded wait for something that must not happen
	}
	if d.Synced() {
		t.Fatal("synced with the Pod list held back")
	}
	unblock()
	if md := <-header; len(md.Get(identityv1.SyncedHeader)) == 0 {
		t.Fatalf("header %v, want %s", md, identityv1.SyncedHeader)
	}
	msg, err := stream.Recv()
	if err != nil || !msg.GetEndpoints()[0].GetMeshed() {
		t.Fatalf("first answer after the sync: %v, %v; want the meshed pod", msg, err)
	}
}
