// Package fleet owns the CA's view of the proxies it serves: each proxy
// reports what it holds (bundle, certificate) over ReportStatus; the
// Registry keeps the latest report per proxy instance and forgets proxies
// that stop reporting; a Report is what one CA replica publishes to the
// cluster, and Merge combines every replica's into one fleet view, which
// anchor rotation waits on.
//
// It imports nothing from meshid.
package fleet

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
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
	ID               string    `json:"id"`
	Instance         string    `json:"instance"`
	BundleSHA256     string    `json:"bundle_sha256"`
	LeafSerial       string    `json:"leaf_serial,omitempty"`
	LeafIssuerSHA256 string    `json:"leaf_issuer_sha256,omitempty"`
	LeafAnchorSHA256 string    `json:"leaf_anchor_sha256,omitempty"`
	LeafNotAfter     time.Time `json:"leaf_not_after,omitzero"`
	LastSeen         time.Time `json:"last_seen"`
	Heartbeat        Duration  `json:"heartbeat"`
}

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

// Registry holds the latest report of every live proxy.
type Registry struct {
	mu      sync.Mutex
	proxies map[string]Proxy // by instance
	now     func() time.Time
}

// NewRegistry returns an empty registry; now nil means time.Now.
func NewRegistry(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{proxies: map[string]Proxy{}, now: now}
}

// Report files p, stamped now.
func (r *Registry) Report(p Proxy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.LastSeen = r.now()
	r.proxies[p.Instance] = p
}

// Live returns the proxies heard from within Forget, sorted by ID then
// instance, and forgets the others.
func (r *Registry) Live() []Proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]Proxy, 0, len(r.proxies))
	for k, p := range r.proxies {
		if p.forgotten(now) {
			delete(r.proxies, k)
			continue
		}
		out = append(out, p)
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

// Report is what one CA replica publishes.
type Report struct {
	Replica      string    `json:"replica"`
	Updated      time.Time `json:"updated"`
	IssuerSHA256 string    `json:"issuer_sha256"`
	BundleSHA256 string    `json:"bundle_sha256"`
	Proxies      []Proxy   `json:"proxies"`
}

// View is the whole fleet, merged from every live replica's report.
type View struct {
	Replicas []Report  `json:"replicas"`
	Proxies  []Proxy   `json:"proxies"`
	At       time.Time `json:"at"`
}

// Merge combines reports: replicas not updated within staleAfter of now
// are dropped (a dead replica holds nothing back), and a proxy that moved
// between replicas counts once, by its latest report.
func Merge(reports []Report, now time.Time, staleAfter time.Duration) View {
	v := View{At: now}
	latest := map[string]Proxy{}
	for _, r := range reports {
		if now.Sub(r.Updated) > staleAfter {
			continue
		}
		v.Replicas = append(v.Replicas, r)
		for _, p := range r.Proxies {
			if cur, ok := latest[p.Instance]; !ok || p.LastSeen.After(cur.LastSeen) {
				latest[p.Instance] = p
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
// saying how long silent ones have not reported.
func (v View) Lagging(done func(Proxy) bool) []string {
	var out []string
	for _, p := range v.Proxies {
		if done(p) {
			continue
		}
		out = append(out, p.Describe(v.At))
	}
	return out
}

// Describe names p for a person: "ID (instance)", and how long it has been
// silent when it has missed three heartbeats at now.
func (p Proxy) Describe(now time.Time) string {
	s := fmt.Sprintf("%s (%.8s)", p.ID, p.Instance)
	if p.Silent(now) {
		s += fmt.Sprintf(" silent for %s: cut off from the CA?", now.Sub(p.LastSeen).Round(time.Second))
	}
	return s
}
