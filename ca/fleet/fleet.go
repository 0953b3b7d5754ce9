// Package fleet owns the CA's view of the proxies it serves: each proxy
// reports what it holds (bundle, certificate) over ReportStatus; the
// Registry checks each report, keeps the latest per proxy (its SPIFFE ID,
// proven by its client certificate, and its instance), bounds how many it
// holds, and forgets proxies that stop reporting; a Report is what one CA
// replica publishes to the cluster (the trust material it has in force,
// the updates of it that it did not take, its proxies), and Merge combines
// every replica's into one fleet view, which anchor rotation waits on and
// `meshid check` reports.
//
// It imports nothing from meshid (the clock is k8s.io/utils/clock).
package fleet

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Every CA replica publishes the proxies it serves to a ConfigMap of its
// own, so `meshid rotate-anchor` can see the whole fleet from the API
// server alone.
const (
	// ConfigMapPrefix starts the name of each replica's ConfigMap.
	ConfigMapPrefix = "meshid-fleet-"
	// Label marks those ConfigMaps (value "true").
	Label = "meshid.dev/fleet"
	// ConfigMapKey holds the replica's Report as JSON.
	ConfigMapKey = "fleet.json"
)

// Proxy is one proxy instance's last report.
type Proxy struct {
	// ID is the SPIFFE ID the proxy's client certificate proved; a report
	// never names it.
	ID               string    `json:"id"`
	Instance         string    `json:"instance"`
	BundleSHA256     string    `json:"bundle_sha256"`
	LeafSerial       string    `json:"leaf_serial,omitempty"`
	LeafIssuerSHA256 string    `json:"leaf_issuer_sha256,omitempty"`
	LeafAnchorSHA256 string    `json:"leaf_anchor_sha256,omitempty"`
	LeafNotAfter     time.Time `json:"leaf_not_after,omitzero"`
	LastSeen         time.Time `json:"last_seen"`
	Heartbeat        Duration  `json:"heartbeat"`
	// OverCap marks a stand-in, not a proxy: at LastSeen the replica
	// refused reports of new instances of ID (of any identity when ID is
	// empty) over a cap, so proxies it does not hold may exist. It has no
	// instance, bundle or leaf, so it never converges: a rotation waits
	// until the replica has refused nothing for Forget.
	OverCap bool `json:"over_cap,omitempty"`
}

// Key names one proxy: the identity that reported and its instance. Two
// identities that report one instance are two proxies, never one.
type Key struct {
	ID, Instance string
}

// Key returns p's key.
func (p Proxy) Key() Key { return Key{ID: p.ID, Instance: p.Instance} }

// Duration is a time.Duration that reads and writes as "30s".
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Forget is how long a proxy that stopped reporting is kept. Until then it
// holds an anchor rotation back: a proxy cut off from the CA may still be
// serving with the old bundle, and removing the old anchor would break it.
const Forget = 5 * time.Minute

// Silent reports whether p has missed three heartbeats at now.
func (p Proxy) Silent(now time.Time) bool {
	hb := time.Duration(p.Heartbeat)
	if hb <= 0 {
		hb = 10 * time.Second
	}
	return now.Sub(p.LastSeen) > 3*hb
}

func (p Proxy) forgotten(now time.Time) bool { return now.Sub(p.LastSeen) > Forget }

// Defaults for Config.
const (
	// DefaultMaxPerIdentity is how many live instances one identity may
	// have on one replica: a Deployment's pods share a service account.
	DefaultMaxPerIdentity = 500
	// DefaultMaxInstances is how many live instances one replica holds:
	// with SPIFFE IDs of up to 250 characters, its fleet ConfigMap stays
	// under Kubernetes' 1 MiB limit.
	DefaultMaxInstances = 1500
)

// Config configures a Registry.
type Config struct {
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// MaxPerIdentity bounds the live instances of one SPIFFE ID; 0 means
	// DefaultMaxPerIdentity, negative means no limit.
	MaxPerIdentity int
	// MaxInstances bounds the live instances of every identity together,
	// and so the size of the replica's Report; 0 means
	// DefaultMaxInstances, negative means no limit.
	MaxInstances int
}

// Registry holds the latest report of every live proxy.
type Registry struct {
	cfg Config

	mu      sync.Mutex
	proxies map[Key]Proxy
	perID   map[string]int       // live instances by ID
	ids     map[string][]string  // the IDs that report each instance
	refused map[string]time.Time // the last report refused over a cap, by ID ("" for MaxInstances)
	swept   time.Time            // when forgotten proxies were last dropped
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg Config) *Registry {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.MaxPerIdentity == 0 {
		cfg.MaxPerIdentity = DefaultMaxPerIdentity
	}
	if cfg.MaxInstances == 0 {
		cfg.MaxInstances = DefaultMaxInstances
	}
	return &Registry{
		cfg: cfg, proxies: map[Key]Proxy{}, perID: map[string]int{}, ids: map[string][]string{}, refused: map[string]time.Time{},
	}
}

// Report files p, stamped now, under p.Key(). The caller sets p.ID from the
// identity the proxy proved, never from what the report says.
//
// A report that fails Check, or that is a proxy's first while its identity
// or the registry holds its most live instances, is refused with an *Error
// and changes nothing: live proxies are never evicted for new ones. A
// refusal over a cap is kept, as a stand-in (Proxy.OverCap) in Live, for
// Forget, so a rotation does not miss the proxies it turned away.
//
// When p is a proxy's first report and other identities' live proxies
// report the same instance, shared names those identities: one of them is
// forging reports (or instances collided). Both proxies are kept, so a
// rotation waits for both.
func (r *Registry) Report(p Proxy) (shared []string, err error) {
	if err := Check(p); err != nil {
		return nil, err
	}
	p.OverCap = false
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Clock.Now()
	p.LastSeen = now
	k := p.Key()
	if _, ok := r.proxies[k]; ok {
		r.proxies[k] = p
		return nil, nil
	}
	if err := r.room(p.ID, now); err != nil {
		return nil, err
	}
	r.proxies[k] = p
	r.perID[p.ID]++
	shared = slices.Clone(r.ids[p.Instance])
	r.ids[p.Instance] = append(r.ids[p.Instance], p.ID)
	return shared, nil
}

// room returns an *Error if id may not have one more live instance.
func (r *Registry) room(id string, now time.Time) error {
	idFull := func() bool { return r.cfg.MaxPerIdentity > 0 && r.perID[id] >= r.cfg.MaxPerIdentity }
	allFull := func() bool { return r.cfg.MaxInstances > 0 && len(r.proxies) >= r.cfg.MaxInstances }
	if (idFull() || allFull()) && now.Sub(r.swept) >= time.Second {
		r.forget(now) // at most once a second: a flood is refused at no more cost
	}
	switch {
	case idFull():
		r.refused[id] = now
		return refuse(IdentityFull, "%s already has %d proxy instances on this CA replica, the most one identity may (meshid-ca --max-fleet-instances-per-identity); a new instance is taken when an old one has not reported for %s", id, r.cfg.MaxPerIdentity, Forget)
	case allFull():
		r.refused[""] = now
		return refuse(ReplicaFull, "this CA replica already holds %d proxy instances, its most (meshid-ca --max-fleet-instances); a new instance is taken when an old one has not reported for %s", r.cfg.MaxInstances, Forget)
	}
	return nil
}

// forget drops the proxies and refusals older than Forget.
func (r *Registry) forget(now time.Time) {
	r.swept = now
	for k, p := range r.proxies {
		if !p.forgotten(now) {
			continue
		}
		delete(r.proxies, k)
		if r.perID[k.ID]--; r.perID[k.ID] <= 0 {
			delete(r.perID, k.ID)
		}
		if ids := slices.DeleteFunc(r.ids[k.Instance], func(id string) bool { return id == k.ID }); len(ids) > 0 {
			r.ids[k.Instance] = ids
		} else {
			delete(r.ids, k.Instance)
		}
	}
	for id, at := range r.refused {
		if now.Sub(at) > Forget {
			delete(r.refused, id)
		}
	}
}

// Live returns the proxies heard from within Forget, and a stand-in for
// each identity (or the whole replica) with a report refused over a cap
// within Forget, sorted by ID then instance, and forgets the others.
func (r *Registry) Live() []Proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Clock.Now()
	r.forget(now)
	out := make([]Proxy, 0, len(r.proxies)+len(r.refused))
	for _, p := range r.proxies {
		out = append(out, p)
	}
	for id, at := range r.refused {
		out = append(out, Proxy{ID: id, LastSeen: at, OverCap: true})
	}
	sortProxies(out)
	return out
}

func sortProxies(ps []Proxy) {
	slices.SortFunc(ps, func(a, b Proxy) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Instance, b.Instance)
	})
}

// Report is what one CA replica publishes: the trust material it has in
// force, the updates of it that it did not take, and the proxies it serves.
type Report struct {
	Replica string    `json:"replica"`
	Updated time.Time `json:"updated"`
	// IssuerSHA256 and BundleSHA256 name the issuer and the bundle in
	// force; empty before the first good one.
	IssuerSHA256 string `json:"issuer_sha256"`
	BundleSHA256 string `json:"bundle_sha256"`
	// Issuer describes the issuer in force; nil before the first good one
	// (and from a meshid-ca that predates it).
	Issuer *Issuer `json:"issuer,omitempty"`
	// Anchors are the bundle's anchors, in bundle order, at most
	// MaxAnchors of AnchorsTotal.
	Anchors      []Anchor `json:"anchors,omitempty"`
	AnchorsTotal int      `json:"anchors_total,omitempty"`
	// Updates are the latest issuer and bundle updates the replica did not
	// take (at most one of each), oldest first.
	Updates []Update `json:"updates,omitempty"`
	Proxies []Proxy  `json:"proxies"`
	// JWT describes the JWT-SVID signing keys in force; nil when the
	// replica mints none (and from a meshid-ca that predates it).
	JWT *JWTKeys `json:"jwt,omitempty"`
}

// JWTKeys are a replica's JWT-SVID signing keys at the report's time.
type JWTKeys struct {
	// Signing is the key ID it signs with; empty while none signs.
	Signing string `json:"signing,omitempty"`
	// SigningNotAfter is when that key stops signing (the next rotation).
	SigningNotAfter time.Time `json:"signing_not_after,omitempty"`
	// Published are the key IDs of the JWKS it publishes.
	Published []string `json:"published"`
}

// View is the whole fleet, merged from every live replica's report.
type View struct {
	Replicas []Report  `json:"replicas"`
	Proxies  []Proxy   `json:"proxies"`
	At       time.Time `json:"at"`
}

// StaleAfter is how long a replica's report counts after its last update:
// a replica publishes every 5 s (meshid-ca --fleet-report-interval), so an
// older report is a dead or cut-off replica's.
const StaleAfter = 30 * time.Second

// Merge combines reports: replicas not updated within staleAfter of now
// are dropped (a dead replica holds nothing back), and a proxy (one Key)
// that moved between replicas counts once, by its latest report. Two
// identities that report one instance stay two proxies.
func Merge(reports []Report, now time.Time, staleAfter time.Duration) View {
	v := View{At: now}
	latest := map[Key]Proxy{}
	for _, r := range reports {
		if now.Sub(r.Updated) > staleAfter {
			continue
		}
		v.Replicas = append(v.Replicas, r)
		for _, p := range r.Proxies {
			if cur, ok := latest[p.Key()]; !ok || p.LastSeen.After(cur.LastSeen) {
				latest[p.Key()] = p
			}
		}
	}
	for _, p := range latest {
		if !p.forgotten(now) {
			v.Proxies = append(v.Proxies, p)
		}
	}
	sortProxies(v.Proxies)
	slices.SortFunc(v.Replicas, func(a, b Report) int { return strings.Compare(a.Replica, b.Replica) })
	return v
}

// Lagging returns the proxies for which done is false, as "ID (instance)",
// saying how long silent ones have not reported, and every stand-in
// (Proxy.OverCap), which is never done.
func (v View) Lagging(done func(Proxy) bool) []string {
	var out []string
	for _, p := range v.Proxies {
		if !p.OverCap && done(p) {
			continue
		}
		out = append(out, p.Describe(v.At))
	}
	return out
}

// Describe names p for a person: "ID (instance)", and how long it has been
// silent when it has missed three heartbeats at now; a stand-in says what
// was refused.
func (p Proxy) Describe(now time.Time) string {
	if p.OverCap {
		who := "proxies of " + p.ID
		if p.ID == "" {
			who = "proxies of any identity"
		}
		return fmt.Sprintf("%s refused by a CA replica over its cap %s ago (see meshid_ca_fleet_reports_refused_total; raise meshid-ca --max-fleet-instances-per-identity or --max-fleet-instances, or stop the flood)",
			who, now.Sub(p.LastSeen).Round(time.Second))
	}
	s := fmt.Sprintf("%s (%.8s)", p.ID, p.Instance)
	if p.Silent(now) {
		s += fmt.Sprintf(" silent for %s: cut off from the CA?", now.Sub(p.LastSeen).Round(time.Second))
	}
	return s
}
