package fleet_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/ca/fleet"
)

func TestMerge(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	p := func(inst, bundle string, seen time.Duration) fleet.Proxy {
		return fleet.Proxy{ID: "spiffe://cluster.local/ns/a/sa/" + inst, Instance: inst, BundleSHA256: bundle, LastSeen: now.Add(-seen), Heartbeat: fleet.Duration(10 * time.Second)}
	}
	reports := []fleet.Report{
		{Replica: "ca-0", Updated: now.Add(-time.Second), Proxies: []fleet.Proxy{p("moved", "old", 20*time.Second), p("quiet", "old", 2*time.Minute)}},
		{Replica: "ca-1", Updated: now, Proxies: []fleet.Proxy{p("moved", "new", time.Second), p("gone", "old", 6*time.Minute)}},
		{Replica: "dead", Updated: now.Add(-time.Minute), Proxies: []fleet.Proxy{p("orphan", "old", time.Minute)}},
	}
	v := fleet.Merge(reports, now, 30*time.Second)
	if len(v.Replicas) != 2 {
		t.Fatalf("%d replicas, want the 2 that published within 30 s", len(v.Replicas))
	}
	got := map[string]fleet.Proxy{}
	for _, x := range v.Proxies {
		got[x.Instance] = x
	}
	if got["moved"].BundleSHA256 != "new" {
		t.Error("a proxy that moved between replicas is not counted once, by its latest report")
	}
	if _, ok := got["gone"]; ok {
		t.Error("a proxy silent for longer than fleet.Forget is still counted")
	}
	if _, ok := got["quiet"]; !ok {
		t.Error("a silent proxy was forgotten before fleet.Forget")
	}
	lag := v.Lagging(func(x fleet.Proxy) bool { return x.BundleSHA256 == "new" })
	if len(lag) != 1 || !strings.Contains(lag[0], "quiet") || !strings.Contains(lag[0], "silent for 2m0s") {
		t.Fatalf("lagging %q, want the quiet proxy named as silent", lag)
	}
}

func TestRegistry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := fleet.NewRegistry(func() time.Time { return now })
	r.Report(fleet.Proxy{ID: "a", Instance: "1", BundleSHA256: "x"})
	r.Report(fleet.Proxy{ID: "a", Instance: "1", BundleSHA256: "y"})
	r.Report(fleet.Proxy{ID: "b", Instance: "2"})
	if live := r.Live(); len(live) != 2 || live[0].BundleSHA256 != "y" {
		t.Fatalf("Live = %+v, want the latest report per instance", live)
	}
	now = now.Add(fleet.Forget + time.Second)
	if live := r.Live(); len(live) != 0 {
		t.Fatalf("Live after fleet.Forget = %+v, want none", live)
	}
}
