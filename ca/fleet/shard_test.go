package fleet_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/ca/fleet"
)

const manifestName = fleet.ConfigMapPrefix + "ca-0"

// cluster is the fleet ConfigMaps as the API server holds them, and what
// was written to it.
type cluster struct {
	cms     map[string]*corev1.ConfigMap
	written int // bytes of shards
	writes  int // shard writes
}

func newCluster() *cluster { return &cluster{cms: map[string]*corev1.ConfigMap{}} }

func (c *cluster) put(name, key string, data []byte) {
	c.cms[name] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{fleet.Label: "true"}}, Data: map[string]string{key: string(data)}}
}

// publish runs one round of w for rep, as publishFleet does.
func (c *cluster) publish(t *testing.T, w *fleet.Writer, rep fleet.Report) {
	t.Helper()
	for _, o := range w.Next(rep) {
		if len(o.Data) > fleet.MaxShardBytes {
			t.Fatalf("shard %s of %d bytes, over the cap %d", o.Name, len(o.Data), fleet.MaxShardBytes)
		}
		c.put(o.Name, fleet.ShardKey, o.Data)
		c.written += len(o.Data)
		c.writes++
		w.Written(o)
	}
	data, err := w.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	c.put(manifestName, fleet.ConfigMapKey, data)
}

// view reads the cluster as rotate-anchor does.
func (c *cluster) view(now time.Time) fleet.View {
	var items []corev1.ConfigMap
	for _, k := range slices.Sorted(maps.Keys(c.cms)) {
		items = append(items, *c.cms[k])
	}
	return fleet.Merge(fleet.Read(items, now), now, fleet.StaleAfter)
}

// shards are the names of the shard objects.
func (c *cluster) shards() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c.cms)) {
		if k != manifestName {
			out = append(out, k)
		}
	}
	return out
}

// proxies returns n proxies of fleet as a registry holds them, all heard
// from at now, with bundle sha.
func proxies(n int, now time.Time, sha string) []fleet.Proxy {
	out := make([]fleet.Proxy, n)
	for i := range out {
		out[i] = fleet.Proxy{
			ID: fmt.Sprintf("spiffe://cluster.local/ns/scale/sa/sa-%d", i%300), Instance: fmt.Sprintf("%016x", i),
			BundleSHA256: sha, LeafSerial: fmt.Sprintf("%032x", i), LeafIssuerSHA256: shaOld, LeafAnchorSHA256: shaOld,
			LeafNotAfter: now.Add(20 * time.Hour).Truncate(time.Second), LastSeen: now.Add(-time.Duration(i%10) * time.Second), Heartbeat: fleet.Duration(10 * time.Second),
		}
	}
	return out
}

// lag is the tests' WriterConfig.DisplayLag: short, so that few rounds
// pass it.
const displayLag = 2 * time.Minute

func newWriter(t *testing.T, clk *clocktesting.FakeClock, bytesPerMinute int) *fleet.Writer {
	t.Helper()
	w, err := fleet.NewWriter(fleet.WriterConfig{Name: manifestName, Clock: clk, BytesPerMinute: bytesPerMinute, DisplayLag: displayLag})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// started returns a writer that has published n proxies on bundle sha
// once, on a fake clock, and what it wrote.
func started(t *testing.T, n int, sha string) (*clocktesting.FakeClock, *fleet.Writer, *cluster, []fleet.Proxy) {
	t.Helper()
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(now)
	w := newWriter(t, clk, 0)
	c := newCluster()
	ps := proxies(n, now, sha)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	return clk, w, c, ps
}

func unread(v fleet.View) []fleet.Proxy {
	var out []fleet.Proxy
	for _, p := range v.Proxies {
		if p.Unread != "" {
			out = append(out, p)
		}
	}
	return out
}

// converged is the gate's question: is every proxy on bundle sha?
func converged(v fleet.View, sha string) []string {
	return v.Lagging(func(p fleet.Proxy) bool { return p.BundleSHA256 == sha })
}

// TestShardsRoundTrip: what the Writer writes, Read gives back whole:
// every proxy once, its fields as reported, heard from at the manifest's
// time; heartbeats write nothing; a bundle change rewrites every shard.
func TestShardsRoundTrip(t *testing.T) {
	clk, w, c, ps := started(t, 1500, shaOld)
	now := clk.Now()
	if w.Shards() != 8 || len(c.shards()) != 8 {
		t.Fatalf("%d shards (%d objects) for 1,500 proxies, want 8 (at most %d each on average)", w.Shards(), len(c.shards()), fleet.ShardProxies)
	}
	v := c.view(now)
	if len(v.Proxies) != len(ps) || len(unread(v)) != 0 {
		t.Fatalf("read %d proxies (%d unread), want %d", len(v.Proxies), len(unread(v)), len(ps))
	}
	want := map[fleet.Key]fleet.Proxy{}
	for _, p := range ps {
		p.LastSeen = now
		want[p.Key()] = p
	}
	for _, p := range v.Proxies {
		w := want[p.Key()]
		if !p.LastSeen.Equal(w.LastSeen) || !p.LeafNotAfter.Equal(w.LeafNotAfter) {
			t.Fatalf("read %+v, want %+v", p, w)
		}
		p.LastSeen, p.LeafNotAfter = w.LastSeen, w.LeafNotAfter
		if p != w {
			t.Fatalf("read %+v, want %+v", p, w)
		}
	}
	if lag := converged(v, shaOld); len(lag) != 0 {
		t.Fatalf("lagging %q", lag)
	}

	clk.Step(5 * time.Second)
	for i := range ps {
		ps[i].LastSeen = clk.Now() // a round of heartbeats
	}
	before := c.writes
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	if c.writes != before {
		t.Fatalf("heartbeats alone wrote %d shards, want none", c.writes-before)
	}
	if v := c.view(clk.Now()); len(v.Proxies) != len(ps) || len(unread(v)) != 0 {
		t.Fatalf("after heartbeats: %d proxies, %d unread", len(v.Proxies), len(unread(v)))
	}

	for i := range ps {
		ps[i].BundleSHA256 = shaNew
	}
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	if c.writes != before {
		t.Fatalf("a change wrote %d shards in its first round, want none before it settles", c.writes-before)
	}
	clk.Step(5 * time.Second)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	if c.writes != before+8 {
		t.Fatalf("a new bundle on every proxy wrote %d shards, want all 8, once", c.writes-before)
	}
	if lag := converged(c.view(clk.Now()), shaNew); len(lag) != 0 {
		t.Fatalf("lagging %q after the new bundle was written", lag)
	}
}

// TestShardMissing: a shard the manifest names that is not there holds
// the gate back, and names the shard.
func TestShardMissing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(now)
	c := newCluster()
	w := newWriter(t, clk, 0)
	ps := proxies(600, now, shaNew)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	gone := c.shards()[1]
	delete(c.cms, gone)
	v := c.view(now)
	un := unread(v)
	if len(un) != 1 || !strings.Contains(un[0].Unread, gone) || !strings.Contains(un[0].Unread, "missing") {
		t.Fatalf("unread %+v, want %s named missing", un, gone)
	}
	lag := converged(v, shaNew)
	if len(lag) != 1 || !strings.Contains(lag[0], gone) {
		t.Fatalf("lagging %q, want the missing shard to hold the gate", lag)
	}
	// Unchanged, it is written again within DisplayLag.
	for clk.Now().Sub(now) <= displayLag {
		clk.Step(5 * time.Second)
		for i := range ps {
			ps[i].LastSeen = clk.Now()
		}
		c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	}
	if v := c.view(clk.Now()); len(unread(v)) != 0 || len(v.Proxies) != len(ps) {
		t.Fatalf("%s later: unread %+v, want the shard written again", displayLag, unread(v))
	}
}

// TestShardStale: a shard whose content is not the one the manifest
// names (overwritten, or an older write) holds the gate back, even when
// every proxy in it looks converged.
func TestShardStale(t *testing.T) {
	clk, w, c, ps := started(t, 1000, shaOld)
	old := maps.Clone(c.cms)
	for i := range ps {
		ps[i].BundleSHA256 = shaNew
	}
	clk.Step(5 * time.Second)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	clk.Step(5 * time.Second)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps}) // settled: written
	stale := c.shards()[2]
	// Shard 2 says old, in a form that claims the new bundle.
	var s map[string]any
	if err := json.Unmarshal([]byte(old[stale].Data[fleet.ShardKey]), &s); err != nil {
		t.Fatal(err)
	}
	s["sha256"] = []any{shaNew, shaOld}
	data, _ := json.Marshal(s)
	c.put(stale, fleet.ShardKey, data)

	v := c.view(clk.Now())
	un := unread(v)
	if len(un) != 1 || !strings.Contains(un[0].Unread, stale) || !strings.Contains(un[0].Unread, "stale") {
		t.Fatalf("unread %+v, want %s named stale", un, stale)
	}
	if lag := converged(v, shaNew); len(lag) != 1 {
		t.Fatalf("lagging %q, want the stale shard to hold the gate", lag)
	}

	// An older write of the shard back in place is stale too.
	c.cms[stale] = old[stale]
	if un := unread(c.view(clk.Now())); len(un) != 1 || !strings.Contains(un[0].Unread, "stale") {
		t.Fatalf("unread %+v, want the older shard named stale", un)
	}
}

// TestShardOverCap: a shard over MaxShardBytes is never written; the
// gate waits and names it; the next round doubles the shard count and
// every shard fits.
func TestShardOverCap(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(now)
	w := newWriter(t, clk, 0)
	c := newCluster()
	ps := proxies(200, now, shaNew)
	for i := range ps {
		ps[i].ID = fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/sa-%d", strings.Repeat("n", 1500), i)
	}
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	if len(c.shards()) != 0 {
		t.Fatalf("wrote %q, want no shard: 200 proxies with IDs of 1.5 KB are over %d bytes", c.shards(), fleet.MaxShardBytes)
	}
	v := c.view(now)
	un := unread(v)
	if len(un) != 1 || !strings.Contains(un[0].Unread, "over the") {
		t.Fatalf("unread %+v, want the shard over the cap named", un)
	}
	if lag := converged(v, shaNew); len(lag) != 1 {
		t.Fatalf("lagging %q, want the shard over the cap to hold the gate", lag)
	}
	clk.Step(5 * time.Second)
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	v = c.view(clk.Now())
	if w.Shards() != 2 || len(v.Proxies) != 200 || len(unread(v)) != 0 {
		t.Fatalf("next round: %d shards, %d proxies, unread %+v; want 2 shards holding all 200", w.Shards(), len(v.Proxies), unread(v))
	}
}

// TestShardWriteRate: shard writes stay within BytesPerMinute (a burst of
// one minute), on an injected clock; a shard that waits is behind after
// StaleAfter and holds the gate back until it is written.
func TestShardWriteRate(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(start)
	const budget = fleet.MaxShardBytes // the least allowed
	w := newWriter(t, clk, budget)
	c := newCluster()
	ps := proxies(2000, start, shaOld)
	round := func() {
		for i := range ps {
			ps[i].LastSeen = clk.Now() // heartbeats
		}
		c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
		clk.Step(5 * time.Second)
	}
	for len(unread(c.view(clk.Now()))) != 0 || c.written == 0 {
		if clk.Now().Sub(start) > 5*time.Minute {
			t.Fatalf("%s: unread %+v", clk.Now().Sub(start), unread(c.view(clk.Now())))
		}
		round()
		// Shards not written yet are never taken for empty.
		if v := c.view(clk.Now()); len(unread(v)) == 0 && len(v.Proxies) != len(ps) {
			t.Fatalf("%s: the view holds %d of %d proxies and no stand-in", clk.Now().Sub(start), len(v.Proxies), len(ps))
		}
	}
	full := c.written
	elapsed := clk.Now().Sub(start)
	if limit := budget * (1 + elapsed.Minutes()); float64(c.written) > limit {
		t.Fatalf("wrote %d bytes of shards in %s, over %.0f (%d a minute, a burst of one minute)", c.written, elapsed, limit, budget)
	}
	t.Logf("2,000 proxies: %d shards, %d bytes (%d per proxy) written in %s at %d bytes a minute", w.Shards(), full, full/len(ps), elapsed, budget)
	v := c.view(clk.Now())
	if len(unread(v)) != 0 || len(v.Proxies) != len(ps) {
		t.Fatalf("after %s: %d proxies, %d unread; want every shard written", elapsed, len(v.Proxies), len(unread(v)))
	}

	// Every proxy takes the new bundle: the shards are due at once but
	// come out at the budget's rate; those that wait are behind.
	for i := range ps {
		ps[i].BundleSHA256 = shaNew
	}
	before := c.written
	changed := clk.Now()
	round()
	if got := c.written - before; got > budget {
		t.Fatalf("wrote %d bytes at once, over the burst %d", got, budget)
	}
	for clk.Now().Sub(changed) <= fleet.StaleAfter+5*time.Second {
		round()
	}
	v = c.view(clk.Now())
	un := unread(v)
	if len(un) == 0 || !strings.Contains(un[0].Unread, "behind") {
		t.Fatalf("unread %+v, want the shards not yet written named behind", un)
	}
	if lag := converged(v, shaNew); len(lag) == 0 {
		t.Fatal("the gate passed while shards were not written")
	}
	// The whole fleet once more takes full/budget minutes, plus a round.
	bound := time.Duration(float64(full)/budget*float64(time.Minute)) + 10*time.Second
	for len(converged(c.view(clk.Now()), shaNew)) != 0 {
		if clk.Now().Sub(changed) > bound {
			t.Fatalf("%s after the change, lagging %q; want all shards written within %s", clk.Now().Sub(changed), converged(c.view(clk.Now()), shaNew), bound)
		}
		round()
	}
	took := clk.Now().Sub(changed)
	if limit := float64(budget) * (1 + took.Minutes()); float64(c.written-before) > limit {
		t.Fatalf("wrote %d bytes in the %s after the change, over %.0f", c.written-before, took, limit)
	}
	t.Logf("a new bundle on 2,000 proxies: on the record %s later (%d bytes)", took, c.written-before)

}

// TestShardRenewalWaits: a renewal changes no field the gate reads:
// nothing is written until DisplayLag, and the gate still vouches for the
// shard meanwhile.
func TestShardRenewalWaits(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(start)
	w := newWriter(t, clk, 0)
	c := newCluster()
	ps := proxies(300, start, shaNew)
	round := func() {
		for i := range ps {
			ps[i].LastSeen = clk.Now()
		}
		c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
		clk.Step(5 * time.Second)
	}
	round()
	serial := func() string {
		for _, p := range c.view(clk.Now()).Proxies {
			if p.Key() == ps[0].Key() {
				return p.LeafSerial
			}
		}
		return ""
	}
	ps[0].LeafSerial = "ff"
	before := c.writes
	for clk.Now().Sub(start) < displayLag-5*time.Second {
		round()
	}
	if c.writes != before || serial() == "ff" {
		t.Fatalf("a renewal wrote %d shards within %s, want none before %s", c.writes-before, clk.Now().Sub(start), displayLag)
	}
	if lag := converged(c.view(clk.Now()), shaNew); len(lag) != 0 {
		t.Fatalf("a pending renewal made the gate wait: %q", lag)
	}
	for clk.Now().Sub(start) <= displayLag+5*time.Second {
		round()
	}
	if got := serial(); got != "ff" {
		t.Fatalf("after %s the renewed serial reads %q, want ff", displayLag, got)
	}
}

// TestShardSettles: a rollout that reaches a shard's proxies over several
// rounds writes each shard once, not at every round, within Settle.
func TestShardSettles(t *testing.T) {
	clk, w, c, ps := started(t, 1500, shaOld)
	before := c.writes
	changed := clk.Now()
	for round := range 4 { // a third of the proxies a round, then one still round
		for i := range ps {
			if i%3 == round {
				ps[i].BundleSHA256 = shaNew
			}
			ps[i].LastSeen = clk.Now()
		}
		c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
		clk.Step(5 * time.Second)
	}
	if got := c.writes - before; got != w.Shards() {
		t.Fatalf("a rollout over 3 rounds wrote %d shards, want each of the %d once", got, w.Shards())
	}
	if lag := converged(c.view(clk.Now()), shaNew); len(lag) != 0 || clk.Now().Sub(changed) > fleet.DefaultSettle+10*time.Second {
		t.Fatalf("%s after the rollout began, lagging %q", clk.Now().Sub(changed), lag)
	}
}

// TestShardSilent: a proxy that goes silent is written at once, with the
// time it was last heard from; one heard from again too.
func TestShardSilent(t *testing.T) {
	clk, w, c, ps := started(t, 10, shaNew)
	clk.Step(40 * time.Second)
	for i := 1; i < len(ps); i++ {
		ps[i].LastSeen = clk.Now()
	}
	before := c.writes
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	clk.Step(5 * time.Second)
	for i := 1; i < len(ps); i++ {
		ps[i].LastSeen = clk.Now()
	}
	c.publish(t, w, fleet.Report{Replica: "ca-0", Proxies: ps})
	if c.writes == before {
		t.Fatal("a proxy gone silent wrote nothing")
	}
	lag := c.view(clk.Now()).Lagging(func(p fleet.Proxy) bool { return false })
	var silent []string
	for _, l := range lag {
		if strings.Contains(l, "silent") {
			silent = append(silent, l)
		}
	}
	if len(silent) != 1 || !strings.Contains(silent[0], ps[0].Instance[:8]) || !strings.Contains(silent[0], "silent for 45s") {
		t.Fatalf("silent %q, want proxy 0 silent for 45s", silent)
	}
}

// TestReadOldManifest: a manifest without shards (an older meshid-ca, its
// proxies inline) is read as it is.
func TestReadOldManifest(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newCluster()
	data, _ := json.Marshal(fleet.Report{Replica: "old", Updated: now, Proxies: proxies(3, now, shaNew)})
	c.put(manifestName, fleet.ConfigMapKey, data)
	if v := c.view(now); len(v.Proxies) != 3 || len(converged(v, shaNew)) != 0 {
		t.Fatalf("read %+v", v.Proxies)
	}
}

// TestShardBytes: what a shard and a manifest weigh, for docs/rotation.md:
// IDs as `make scale` has them, and the worst case (IDs of 250
// characters, instances of 64, twice ShardProxies in one shard) within
// MaxShardBytes; the manifest of a replica at DefaultMaxInstances with the
// largest trust state under a ConfigMap's 1 MiB.
func TestShardBytes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(now)
	for _, tc := range []struct {
		name string
		n    int
		long bool
	}{{"scale IDs", 4 * fleet.ShardProxies, false}, {"IDs of 250", 2 * fleet.ShardProxies, true}} {
		ps := proxies(tc.n, now, shaNew)
		if tc.long {
			for i := range ps {
				ps[i].ID = fmt.Sprintf("spiffe://cluster.local/ns/%s-%03d/sa/%s-%04d", strings.Repeat("n", 59), i%100, strings.Repeat("s", 152), i)
				ps[i].Instance = fmt.Sprintf("%064x", i)
				ps[i].LeafSerial = strings.Repeat("f", fleet.MaxSerialLen)
			}
		}
		w, err := fleet.NewWriter(fleet.WriterConfig{Name: manifestName, Clock: clk, BytesPerMinute: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		objs := w.Next(fleet.Report{Replica: "meshid-ca-7d9f8b6c5-x2x4z", Proxies: ps})
		largest, total := 0, 0
		for _, o := range objs {
			largest, total = max(largest, len(o.Data)), total+len(o.Data)
		}
		t.Logf("%s: %d proxies in %d shards, %d bytes each, the largest shard %d bytes", tc.name, tc.n, w.Shards(), total/tc.n, largest)
		if tc.long {
			one, err := fleet.NewWriter(fleet.WriterConfig{Name: manifestName, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			objs := one.Next(fleet.Report{Replica: "meshid-ca-7d9f8b6c5-x2x4z", Proxies: ps[:fleet.ShardProxies]})
			if len(objs) != 1 {
				t.Fatalf("%d objects", len(objs))
			}
			per := len(objs[0].Data) / fleet.ShardProxies
			if 2*fleet.ShardProxies*per > fleet.MaxShardBytes {
				t.Fatalf("a proxy with an ID of 250 characters is %d bytes: twice %d of them is over %d", per, fleet.ShardProxies, fleet.MaxShardBytes)
			}
		}
	}

	long := strings.Repeat("é", fleet.MaxTextLen)
	rep := fleet.Report{
		Replica: "meshid-ca-7d9f8b6c5-x2x4z", Updated: now, IssuerSHA256: shaOld, BundleSHA256: shaOld,
		Issuer:       &fleet.Issuer{Subject: fleet.Truncate(long), NotBefore: now, NotAfter: now, ChainNotAfter: now, AnchorSHA256: shaOld},
		AnchorsTotal: 100,
	}
	for range fleet.MaxAnchors {
		rep.Anchors = append(rep.Anchors, fleet.Anchor{SHA256: shaOld, NotAfter: now})
	}
	for _, m := range []string{"issuer", "bundle"} {
		rep.Updates = append(rep.Updates, fleet.Update{Material: m, Source: long, Status: fleet.UpdateHeldBack, Reason: long, SHA256: shaOld, Since: now}.Bounded())
	}
	w := newWriter(t, clk, 1<<30)
	rep.Proxies = proxies(fleet.DefaultMaxInstances, now, shaNew)
	for _, o := range w.Next(rep) {
		w.Written(o)
	}
	clk.Step(time.Minute) // every shard due and none written: every At is written out
	for i := range rep.Proxies {
		rep.Proxies[i].BundleSHA256 = shaOld
	}
	w.Next(rep)
	data, err := w.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("manifest of %d proxies in %d shards, largest trust state: %d bytes", fleet.DefaultMaxInstances, w.Shards(), len(data))
	if len(data) > fleet.MaxShardBytes {
		t.Fatalf("the manifest is %d bytes, over %d", len(data), fleet.MaxShardBytes)
	}
}
