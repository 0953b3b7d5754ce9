package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sidecar"
)

// DefaultMaxSubscriptions is DiscoveryConfig.MaxSubscriptions' default.
const DefaultMaxSubscriptions = 4096

// DiscoveryConfig configures a Discovery.
type DiscoveryConfig struct {
	// Client lists and watches Pods, Services and EndpointSlices. Required.
	Client kubernetes.Interface
	// TrustDomain names the pods' identities. Required.
	TrustDomain spiffeid.TrustDomain
	// Authenticate returns the caller's verified SPIFFE ID, or a gRPC
	// status error. Required.
	Authenticate func(ctx context.Context) (spiffeid.ID, error)
	// ProxyAdminPort is the proxies' admin port, which is never meshed; 0
	// means sidecar.AdminPort.
	ProxyAdminPort int
	// MaxSubscriptions bounds the addresses one stream follows; 0 means
	// DefaultMaxSubscriptions.
	MaxSubscriptions int
	// Log receives what the watchers report; nil discards.
	Log *slog.Logger
}

// Discovery serves WatchDestinations from informers on Pods, Services and
// EndpointSlices.
type Discovery struct {
	identityv1.UnimplementedDiscoveryServer
	cfg                    DiscoveryConfig
	factory                informers.SharedInformerFactory
	pods, services, slices cache.SharedIndexInformer

	mu      sync.Mutex
	changed chan struct{}
	closed  chan struct{}
	close   sync.Once
}

// Index names of the informers.
const (
	byIP      = "ip"
	byService = "service"
)

// NewDiscovery returns a Discovery; Run fills it.
func NewDiscovery(cfg DiscoveryConfig) (*Discovery, error) {
	if cfg.Client == nil || cfg.TrustDomain.IsZero() || cfg.Authenticate == nil {
		return nil, errors.New("ca: DiscoveryConfig needs Client, TrustDomain and Authenticate")
	}
	if cfg.ProxyAdminPort == 0 {
		cfg.ProxyAdminPort = sidecar.AdminPort
	}
	if cfg.MaxSubscriptions == 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactory(cfg.Client, 0)
	d := &Discovery{
		cfg: cfg, factory: f, changed: make(chan struct{}), closed: make(chan struct{}),
		pods: f.Core().V1().Pods().Informer(), services: f.Core().V1().Services().Informer(),
		slices: f.Discovery().V1().EndpointSlices().Informer(),
	}
	errs := []error{
		d.pods.AddIndexers(cache.Indexers{byIP: podIPs}),
		d.services.AddIndexers(cache.Indexers{byIP: serviceIPs}),
		d.slices.AddIndexers(cache.Indexers{byService: sliceService}),
	}
	for _, inf := range []cache.SharedIndexInformer{d.pods, d.services, d.slices} {
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { d.bump() }, UpdateFunc: func(any, any) { d.bump() }, DeleteFunc: func(any) { d.bump() },
		})
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ca: discovery informers: %w", err)
	}
	return d, nil
}

// Run watches until ctx ends.
func (d *Discovery) Run(ctx context.Context) error {
	d.factory.Start(ctx.Done())
	if d.factory.WaitForCacheSync(ctx.Done()); ctx.Err() == nil {
		d.bump() // streams waiting for the first lists learn they are done
	}
	<-ctx.Done()
	d.factory.Shutdown()
	return nil
}

// Synced reports whether the first lists are done.
func (d *Discovery) Synced() bool {
	return d.pods.HasSynced() && d.services.HasSynced() && d.slices.HasSynced()
}

// Close ends every stream (the CA is shutting down); it is idempotent.
func (d *Discovery) Close() { d.close.Do(func() { close(d.closed) }) }

func (d *Discovery) bump() {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Discovery) changes() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

func podIPs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, nil // a host-network pod's address is its node's
	}
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	return canonical(ips), nil
}

func serviceIPs(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	return canonical(slices.DeleteFunc(slices.Clone(ips), func(ip string) bool { return ip == corev1.ClusterIPNone })), nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}

// canonical parses ips and prints them as netip does, so that lookups by
// netip.Addr.String() match.
func canonical(ips []string) []string {
	var out []string
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out
}

// Lookup says who is behind addr now.
func (d *Discovery) Lookup(addr netip.AddrPort) *identityv1.Destination {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	ip := addr.Addr().String()
	dest := &identityv1.Destination{Address: addr.String(), Kind: identityv1.Destination_EXTERNAL}
	if objs, _ := d.services.GetIndexer().ByIndex(byIP, ip); len(objs) > 0 {
		svc := objs[0].(*corev1.Service)
		for _, sp := range svc.Spec.Ports {
			if sp.Port == int32(addr.Port()) && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
				dest.Kind = identityv1.Destination_SERVICE
				dest.Endpoints = d.serviceEndpoints(svc, sp)
				return dest
			}
		}
		return dest // a port the Service does not serve: nothing answers
	}
	if pod := d.podAt(ip); pod != nil {
		dest.Kind = identityv1.Destination_POD
		dest.Endpoints = []*identityv1.Endpoint{d.endpoint(pod, addr)}
		return dest
	}
	dest.Endpoints = []*identityv1.Endpoint{{Address: addr.String()}}
	return dest
}

func (d *Discovery) podAt(ip string) *corev1.Pod {
	objs, _ := d.pods.GetIndexer().ByIndex(byIP, ip)
	if len(objs) == 0 {
		return nil
	}
	return objs[0].(*corev1.Pod)
}

// serviceEndpoints are the ready endpoints of sp, sorted by address.
func (d *Discovery) serviceEndpoints(svc *corev1.Service, sp corev1.ServicePort) []*identityv1.Endpoint {
	objs, _ := d.slices.GetIndexer().ByIndex(byService, svc.Namespace+"/"+svc.Name)
	var eps []*identityv1.Endpoint
	for _, obj := range objs {
		s := obj.(*discoveryv1.EndpointSlice)
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port := -1
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name) && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				port = int(*p.Port)
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
				switch pod := d.podAt(ap.Addr().String()); {
				case pod != nil:
					eps = append(eps, d.endpoint(pod, ap))
				case s.Labels[discoveryv1.LabelManagedBy] == external.ManagedBy:
					eps = append(eps, d.externalEndpoint(s, ap))
				default:
					eps = append(eps, &identityv1.Endpoint{Address: ap.String()})
				}
			}
		}
	}
	slices.SortFunc(eps, func(a, b *identityv1.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return slices.CompactFunc(eps, func(a, b *identityv1.Endpoint) bool { return a.Address == b.Address })
}

// externalEndpoint is an ExternalWorkload's address in a slice meshid-ca
// published (external.Slices): its meshid-proxy terminates mTLS there as
// the workload's service account.
func (d *Discovery) externalEndpoint(s *discoveryv1.EndpointSlice, addr netip.AddrPort) *identityv1.Endpoint {
	ep := &identityv1.Endpoint{Address: addr.String(), Meshed: true} // no valid ID: the caller refuses
	id, err := identity.ServiceAccount{Namespace: s.Namespace, Name: s.Labels[external.ServiceAccountLabel]}.ID(d.cfg.TrustDomain)
	if err == nil {
		ep.SpiffeId = id.String()
	}
	return ep
}

// endpoint is pod at addr: meshed when its TCP is redirected to its proxy
// and the port is not one it skips.
func (d *Discovery) endpoint(pod *corev1.Pod, addr netip.AddrPort) *identityv1.Endpoint {
	ep := &identityv1.Endpoint{Address: addr.String()}
	if pod.Annotations[sidecar.TransparentAnnotation] != "enabled" || int(addr.Port()) == d.cfg.ProxyAdminPort {
		return ep
	}
	for _, f := range strings.Split(pod.Annotations[sidecar.SkipInboundPortsAnnotation], ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n == int(addr.Port()) {
			return ep
		}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id, err := identity.ServiceAccount{Namespace: pod.Namespace, Name: sa}.ID(d.cfg.TrustDomain)
	if err != nil {
		// Not meshed, and not plain either: an empty ID makes the caller
		// refuse the connection (it fails closed).
		ep.Meshed = true
		d.cfg.Log.Warn("a transparent pod has no valid identity", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		return ep
	}
	ep.Meshed, ep.SpiffeId = true, id.String()
	return ep
}

// WatchDestinations implements identityv1.DiscoveryServer. Nothing is sent
// until the informers have synced; then the header identityv1.SyncedHeader,
// then the answers.
func (d *Discovery) WatchDestinations(stream identityv1.Discovery_WatchDestinationsServer) error {
	ctx := stream.Context()
	if _, err := d.cfg.Authenticate(ctx); err != nil {
		return err
	}
	for !d.Synced() {
		changed := d.changes()
		if d.Synced() {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.closed:
			return status.Error(codes.Unavailable, "the CA is shutting down; reconnect to another replica")
		case <-changed:
		}
	}
	if err := stream.SendHeader(metadata.Pairs(identityv1.SyncedHeader, "true")); err != nil {
		return fmt.Errorf("ca: send the discovery header: %w", err)
	}
	var (
		mu   sync.Mutex
		subs = map[netip.AddrPort]*identityv1.Destination{} // the last answer sent; nil: none yet
		wake = make(chan struct{}, 1)
		errc = make(chan error, 1)
	)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			err = d.subscribe(subs, req)
			mu.Unlock()
			if err != nil {
				errc <- err
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	for {
		changed := d.changes()
		var out []*identityv1.Destination
		mu.Lock()
		for a, last := range subs {
			if cur := d.Lookup(a); last == nil || !proto.Equal(last, cur) {
				subs[a] = cur
				out = append(out, cur)
			}
		}
		mu.Unlock()
		for _, m := range out {
			if err := stream.Send(m); err != nil {
				return fmt.Errorf("ca: send destination: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.closed:
			return status.Error(codes.Unavailable, "the CA is shutting down; reconnect to another replica")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-wake:
		case <-changed:
		}
	}
}

// subscribe applies req to subs.
func (d *Discovery) subscribe(subs map[netip.AddrPort]*identityv1.Destination, req *identityv1.DestinationsRequest) error {
	for _, s := range req.GetUnsubscribe() {
		if a, err := netip.ParseAddrPort(s); err == nil {
			delete(subs, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
		}
	}
	for _, s := range req.GetSubscribe() {
		a, err := netip.ParseAddrPort(s)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "subscribe %q: want IP:port", s)
		}
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if _, ok := subs[a]; !ok && len(subs) >= d.cfg.MaxSubscriptions {
			return status.Errorf(codes.ResourceExhausted, "a stream follows at most %d addresses; unsubscribe from unused ones", d.cfg.MaxSubscriptions)
		}
		subs[a] = nil // answered again, even when it was before
	}
	return nil
}
