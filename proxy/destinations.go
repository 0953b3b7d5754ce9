package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
)

// DestinationsConfig configures a Destinations.
type DestinationsConfig struct {
	// Open opens a WatchDestinations stream and returns it with a func that
	// releases what it holds (the connection). Required.
	Open func(ctx context.Context) (identityv1.Discovery_WatchDestinationsClient, func(), error)
	// MaxStale is how long answers stay in use after the stream broke;
	// after that, every address is unknown until the stream is back (and
	// connections are refused). 0 means 30 s.
	MaxStale time.Duration
	// Idle is how long an address nobody dials stays subscribed; 0 means
	// 5 min.
	Idle time.Duration
	// MaxAddresses bounds the addresses followed at once: a new one beyond
	// it replaces the least recently dialled. 0 means 2,048 (the CA follows
	// at most 4,096 per stream).
	MaxAddresses int
	// Clock tells the time and paces the reconnects and evictions; nil
	// means the real clock.
	Clock clock.WithTicker
	// Log receives the stream's breaks; nil discards.
	Log *slog.Logger
}

// Destinations is the proxy's Resolver: it asks the CA's discovery stream
// who is behind each address the app dials, and keeps the answers (and the
// CA's updates to them) while the address is in use.
type Destinations struct {
	cfg  DestinationsConfig
	kick chan struct{}
	rr   atomic.Uint64 // spreads connections over a Service's endpoints

	mu        sync.Mutex
	entries   map[netip.AddrPort]*entry
	subscribe []string // to send on the current stream
	unsub     []string
	connected bool
	brokeAt   time.Time // when the stream last broke
	updated   time.Time // the CA's last header or answer
}

type entry struct {
	dest  *identityv1.Destination // nil until the first answer
	ready chan struct{}           // closed at the first answer
	used  time.Time
}

// NewDestinations returns a Destinations; Run keeps its stream.
func NewDestinations(cfg DestinationsConfig) (*Destinations, error) {
	if cfg.Open == nil {
		return nil, errors.New("proxy: DestinationsConfig.Open is required")
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = 30 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 5 * time.Minute
	}
	if cfg.MaxAddresses <= 0 {
		cfg.MaxAddresses = 2048
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Destinations{cfg: cfg, kick: make(chan struct{}, 1), entries: map[netip.AddrPort]*entry{}}, nil
}

// Resolve implements Resolver: it waits (as long as ctx allows) for the
// CA's first answer about dst, then picks where to go.
func (d *Destinations) Resolve(ctx context.Context, dst netip.AddrPort) (Destination, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	d.mu.Lock()
	e := d.entries[dst]
	if e == nil {
		if len(d.entries) >= d.cfg.MaxAddresses {
			d.forgetOldest()
		}
		e = &entry{ready: make(chan struct{})}
		d.entries[dst] = e
		d.subscribe = append(d.subscribe, dst.String())
		d.poke()
	}
	e.used = d.cfg.Clock.Now()
	d.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return Destination{}, fmt.Errorf("proxy: the CA has not said who is behind %s: %w", dst, ctx.Err())
	}
	d.mu.Lock()
	dest, fresh := e.dest, d.fresh(d.cfg.Clock.Now())
	d.mu.Unlock()
	if !fresh {
		return Destination{}, fmt.Errorf("proxy: the CA's discovery stream has been down since %s, longer than %s: who is behind %s is no longer known", d.brokeAt.Format(time.RFC3339), d.cfg.MaxStale, dst)
	}
	return d.pick(dest)
}

// Connected reports whether the stream is up and answering.
func (d *Destinations) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connected
}

// fresh says the answers can be used: the stream is up, or broke less
// than MaxStale ago. Before the CA's first header or answer nothing is
// fresh. d.mu is held.
func (d *Destinations) fresh(now time.Time) bool {
	return d.connected || !d.brokeAt.IsZero() && now.Sub(d.brokeAt) <= d.cfg.MaxStale
}

// DiscoveryStatus is the state of the destination cache, as /identity
// shows it.
type DiscoveryStatus struct {
	// Connected: the CA's stream is up and has said its informers synced
	// (or answered).
	Connected bool `json:"connected"`
	// Fresh: answers are used (Connected, or broken less than MaxStale
	// ago); a transparent proxy is not ready while it is false.
	Fresh bool `json:"fresh"`
	// LastUpdate is the CA's last header or answer; BrokeAt when the
	// stream last broke (zero: never).
	LastUpdate time.Time `json:"last_update,omitzero"`
	BrokeAt    time.Time `json:"broke_at,omitzero"`
	// MaxStale is how long answers outlive a broken stream.
	MaxStale string `json:"max_stale"`
	// Addresses is how many destinations are followed.
	Addresses int `json:"addresses"`
}

// Status reports the cache's freshness as of now.
func (d *Destinations) Status() DiscoveryStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DiscoveryStatus{
		Connected: d.connected, Fresh: d.fresh(d.cfg.Clock.Now()), LastUpdate: d.updated, BrokeAt: d.brokeAt,
		MaxStale: d.cfg.MaxStale.String(), Addresses: len(d.entries),
	}
}

// pick chooses an endpoint of dest.
func (d *Destinations) pick(dest *identityv1.Destination) (Destination, error) {
	eps := dest.GetEndpoints()
	if len(eps) == 0 {
		return Destination{}, fmt.Errorf("proxy: nothing serves %s (%s with no ready endpoint)", dest.GetAddress(), dest.GetKind())
	}
	ep := eps[int(d.rr.Add(1)%uint64(len(eps)))]
	addr, err := netip.ParseAddrPort(ep.GetAddress())
	if err != nil {
		return Destination{}, fmt.Errorf("proxy: the CA sent endpoint %q for %s: %w", ep.GetAddress(), dest.GetAddress(), err)
	}
	out := Destination{Addr: addr, Meshed: ep.GetMeshed()}
	if out.Meshed {
		// A meshed endpoint without a valid ID stays meshed with a zero ID:
		// the connection is refused, never sent in plain.
		out.ID, _ = spiffeid.FromString(ep.GetSpiffeId())
	}
	return out, nil
}

func (d *Destinations) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Run keeps the stream open until ctx ends, reconnecting with backoff.
func (d *Destinations) Run(ctx context.Context) error {
	backoff := rotation.NewBackoff(time.Second, 30*time.Second)
	evict := d.cfg.Clock.NewTicker(d.cfg.Idle / 2)
	defer evict.Stop()
	for {
		err := d.follow(ctx, backoff, evict.C())
		d.mu.Lock()
		if d.connected {
			d.connected, d.brokeAt = false, d.cfg.Clock.Now()
		}
		d.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff.Next()
		d.cfg.Log.Warn("the CA's discovery stream broke; answers stay in use for a while", "error", err.Error(), rotation.RetryIn(wait), "max_stale", d.cfg.MaxStale.String())
		select {
		case <-ctx.Done():
			return nil
		case <-d.cfg.Clock.After(wait):
		}
	}
}

func (d *Destinations) follow(ctx context.Context, backoff *rotation.Backoff, evict <-chan time.Time) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, release, err := d.cfg.Open(ctx)
	if err != nil {
		return err
	}
	defer release()
	// Every address in use is asked again on a new stream.
	d.mu.Lock()
	d.subscribe, d.unsub = d.subscribe[:0], nil
	for a := range d.entries {
		d.subscribe = append(d.subscribe, a.String())
	}
	d.mu.Unlock()
	d.poke()
	recvErr := make(chan error, 1)
	go func() {
		// The CA sends its header once its informers synced (an older CA
		// with its first answer): from then on the cache is fresh.
		md, err := stream.Header()
		if err != nil {
			recvErr <- err
			return
		}
		if len(md.Get(identityv1.SyncedHeader)) > 0 {
			backoff.Reset()
			d.mu.Lock()
			d.connected, d.updated = true, d.cfg.Clock.Now()
			d.mu.Unlock()
		}
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			backoff.Reset()
			d.answer(msg)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case <-evict:
			d.evict()
		case <-d.kick:
		}
		d.mu.Lock()
		req := &identityv1.DestinationsRequest{Subscribe: d.subscribe, Unsubscribe: d.unsub}
		d.subscribe, d.unsub = nil, nil
		d.mu.Unlock()
		if len(req.Subscribe)+len(req.Unsubscribe) == 0 {
			continue
		}
		if err := stream.Send(req); err != nil {
			d.mu.Lock()
			d.subscribe = append(d.subscribe, req.Subscribe...) // resent on the next stream anyway
			d.mu.Unlock()
			return err
		}
	}
}

// answer records what the CA said about one address.
func (d *Destinations) answer(msg *identityv1.Destination) {
	a, err := netip.ParseAddrPort(msg.GetAddress())
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.connected, d.updated = true, d.cfg.Clock.Now()
	e := d.entries[netip.AddrPortFrom(a.Addr().Unmap(), a.Port())]
	if e == nil {
		return // unsubscribed meanwhile
	}
	e.dest = msg
	select {
	case <-e.ready:
	default:
		close(e.ready)
	}
}

// forgetOldest unsubscribes from the least recently dialled address.
func (d *Destinations) forgetOldest() {
	var (
		oldest netip.AddrPort
		used   time.Time
	)
	for a, e := range d.entries {
		if !oldest.IsValid() || e.used.Before(used) {
			oldest, used = a, e.used
		}
	}
	delete(d.entries, oldest)
	d.unsub = append(d.unsub, oldest.String())
}

// evict forgets the addresses nobody dialled for Idle.
func (d *Destinations) evict() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Clock.Now()
	for a, e := range d.entries {
		if now.Sub(e.used) > d.cfg.Idle {
			delete(d.entries, a)
			d.unsub = append(d.unsub, a.String())
		}
	}
}
