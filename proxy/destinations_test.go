package proxy_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/proxy"
)

// fakeDiscovery is a real gRPC Discovery server that answers from a table
// and pushes a new answer when told to.
type fakeDiscovery struct {
	identityv1.UnimplementedDiscoveryServer
	mu     sync.Mutex
	table  map[string]*identityv1.Destination
	push   chan *identityv1.Destination
	breakc chan struct{}
	unsub  []string
}

func (f *fakeDiscovery) WatchDestinations(stream identityv1.Discovery_WatchDestinationsServer) error {
	reqs := make(chan *identityv1.DestinationsRequest)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(reqs)
				return
			}
			reqs <- r
		}
	}()
	for {
		select {
		case r, ok := <-reqs:
			if !ok {
				return nil
			}
			f.mu.Lock()
			f.unsub = append(f.unsub, r.GetUnsubscribe()...)
			f.mu.Unlock()
			for _, a := range r.GetSubscribe() {
				f.mu.Lock()
				d := f.table[a]
				f.mu.Unlock()
				if d != nil {
					if err := stream.Send(d); err != nil {
						return err
					}
				}
			}
		case d := <-f.push:
			if err := stream.Send(d); err != nil {
				return err
			}
		case <-f.breakc:
			return status.Error(codes.Unavailable, "broken by the test")
		}
	}
}

func pod(addr, id string) *identityv1.Destination {
	return &identityv1.Destination{Address: addr, Kind: identityv1.Destination_POD,
		Endpoints: []*identityv1.Endpoint{{Address: addr, Meshed: id != "", SpiffeId: id}}}
}

// serve serves a Discovery server on loopback.
func serve(t *testing.T, d identityv1.DiscoveryServer) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	identityv1.RegisterDiscoveryServer(srv, d)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return srv, lis.Addr().String()
}

// open is a DestinationsConfig.Open to addr, that tells opened (when not
// nil) of every stream it opens.
func open(addr string, opened chan<- struct{}) func(ctx context.Context) (identityv1.Discovery_WatchDestinationsClient, func(), error) {
	return func(ctx context.Context) (identityv1.Discovery_WatchDestinationsClient, func(), error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		s, err := identityv1.NewDiscoveryClient(conn).WatchDestinations(ctx)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		if opened != nil {
			opened <- struct{}{}
		}
		return s, func() { conn.Close() }, nil
	}
}

func TestDestinations(t *testing.T) {
	const web = "spiffe://cluster.local/ns/shop/sa/web"
	f := &fakeDiscovery{push: make(chan *identityv1.Destination), breakc: make(chan struct{}), table: map[string]*identityv1.Destination{
		"10.1.0.1:8080": pod("10.1.0.1:8080", web),
		"10.1.0.9:80":   pod("10.1.0.9:80", ""),
		"10.0.0.10:80": {Address: "10.0.0.10:80", Kind: identityv1.Destination_SERVICE, Endpoints: []*identityv1.Endpoint{
			{Address: "10.1.0.1:8080", Meshed: true, SpiffeId: web}, {Address: "10.1.0.2:8080"}}},
		"10.0.0.11:80":  {Address: "10.0.0.11:80", Kind: identityv1.Destination_SERVICE},
		"10.1.0.5:8080": pod("10.1.0.5:8080", "not-an-id"),
	}}
	srv, addr := serve(t, f)

	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	d, err := proxy.NewDestinations(proxy.DestinationsConfig{
		Open:         open(addr, nil),
		MaxStale:     30 * time.Second,
		MaxAddresses: 6,
		Clock:        setClock{now: &now},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	resolve := func(addr string) (proxy.Destination, error) {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		return d.Resolve(rctx, netip.MustParseAddrPort(addr))
	}
	t.Run("a meshed pod", func(t *testing.T) {
		got, err := resolve("10.1.0.1:8080")
		want := proxy.Destination{Addr: netip.MustParseAddrPort("10.1.0.1:8080"), Meshed: true, ID: spiffeid.RequireFromString(web)}
		if err != nil || got != want {
			t.Fatalf("Resolve = %+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("a Service spreads over its endpoints", func(t *testing.T) {
		seen := map[netip.AddrPort]bool{}
		for range 4 {
			got, err := resolve("10.0.0.10:80")
			if err != nil {
				t.Fatal(err)
			}
			seen[got.Addr] = true
		}
		if len(seen) != 2 {
			t.Fatalf("endpoints used: %v, want both", seen)
		}
	})
	t.Run("a Service with no endpoint is refused", func(t *testing.T) {
		if _, err := resolve("10.0.0.11:80"); err == nil || !strings.Contains(err.Error(), "no ready endpoint") {
			t.Fatalf("Resolve: %v, want no ready endpoint", err)
		}
	})
	t.Run("a meshed endpoint with a bad ID keeps a zero ID", func(t *testing.T) {
		got, err := resolve("10.1.0.5:8080")
		if err != nil || !got.Meshed || !got.ID.IsZero() {
			t.Fatalf("Resolve = %+v, %v; want meshed with a zero ID (refused by the proxy)", got, err)
		}
	})
	t.Run("no answer is an error", func(t *testing.T) {
		rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer rcancel()
		if _, err := d.Resolve(rctx, netip.MustParseAddrPort("10.7.7.7:1")); err == nil {
			t.Fatal("Resolve of an address the CA never answered succeeded")
		}
	})
	t.Run("an update is followed", func(t *testing.T) {
		if _, err := resolve("10.1.0.9:80"); err != nil {
			t.Fatal(err)
		}
		f.push <- pod("10.1.0.9:80", web)
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := resolve("10.1.0.9:80")
			if err == nil && got.Meshed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pushed update never arrived: %+v, %v", got, err)
			}
			time.Sleep(5 * time.Millisecond) // polling for a condition the stream sets
		}
	})
	t.Run("beyond MaxAddresses the least recently dialled is unsubscribed", func(t *testing.T) {
		// Six addresses are followed now.
		later := start.Add(time.Second)
		now.Store(&later)
		if _, err := resolve("10.1.0.1:8080"); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.table["10.1.0.6:80"] = pod("10.1.0.6:80", "")
		f.mu.Unlock()
		if _, err := resolve("10.1.0.6:80"); err != nil {
			t.Fatal(err)
		}
		now.Store(&start)
		f.mu.Lock()
		defer f.mu.Unlock()
		// Every address but 10.1.0.1 (dialled again) was last dialled at
		// start: one of them goes.
		if len(f.unsub) != 1 || f.unsub[0] == "10.1.0.1:8080" || f.unsub[0] == "10.1.0.6:80" {
			t.Fatalf("unsubscribed %v, want exactly one of the addresses dialled longest ago", f.unsub)
		}
	})
	t.Run("answers go stale once the stream is down too long", func(t *testing.T) {
		srv.Stop() // the stream breaks and cannot come back
		deadline := time.Now().Add(5 * time.Second)
		for d.Connected() {
			if time.Now().After(deadline) {
				t.Fatal("the stream still counts as connected after the server stopped")
			}
			time.Sleep(5 * time.Millisecond) // polling for a condition the stream sets
		}
		later := start.Add(10 * time.Second)
		now.Store(&later)
		if _, err := resolve("10.1.0.1:8080"); err != nil {
			t.Fatalf("within MaxStale of the break: %v", err)
		}
		if st := d.Status(); !st.Fresh || st.Connected || st.BrokeAt.IsZero() {
			t.Errorf("within MaxStale of the break: %+v, want fresh, not connected", st)
		}
		much := start.Add(time.Hour)
		now.Store(&much)
		if _, err := resolve("10.1.0.1:8080"); err == nil || !strings.Contains(err.Error(), "no longer known") {
			t.Fatalf("an hour after the break: %v, want the answer refused as stale", err)
		}
		if st := d.Status(); st.Fresh {
			t.Errorf("an hour after the break: %+v, want stale", st)
		}
	})
}

// setClock is the real clock, but for Now, which the test sets.
type setClock struct {
	clock.RealClock
	now *atomic.Pointer[time.Time]
}

func (c setClock) Now() time.Time { return *c.now.Load() }

// headerFirst is a Discovery server that sends the synced header as soon
// as synced is closed, and nothing else.
type headerFirst struct {
	identityv1.UnimplementedDiscoveryServer
	synced chan struct{}
}

func (h *headerFirst) WatchDestinations(stream identityv1.Discovery_WatchDestinationsServer) error {
	select {
	case <-stream.Context().Done():
		return nil
	case <-h.synced:
	}
	if err := stream.SendHeader(metadata.Pairs(identityv1.SyncedHeader, "true")); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// TestDestinationsFreshOnHeader: the cache is not fresh before the CA says
// its informers synced, and is at once after, though nothing was dialled.
func TestDestinationsFreshOnHeader(t *testing.T) {
	h := &headerFirst{synced: make(chan struct{})}
	_, addr := serve(t, h)
	opened := make(chan struct{}, 1)
	d, err := proxy.NewDestinations(proxy.DestinationsConfig{
		Open: open(addr, opened),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-opened
	if st := d.Status(); st.Fresh || st.Connected || !st.LastUpdate.IsZero() {
		t.Fatalf("before the header: %+v, want neither fresh nor connected", st)
	}
	close(h.synced)
	deadline := time.Now().Add(5 * time.Second)
	for !d.Status().Fresh {
		if time.Now().After(deadline) {
			t.Fatalf("after the header: %+v, want fresh", d.Status())
		}
		time.Sleep(5 * time.Millisecond) // polling for a condition the stream sets
	}
	if st := d.Status(); !st.Connected || st.LastUpdate.IsZero() || st.Addresses != 0 {
		t.Errorf("after the header: %+v, want connected, updated, following nothing", st)
	}
}
