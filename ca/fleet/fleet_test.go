package fleet_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/ca/fleet"
)

// Fields as a proxy sends them (proxy/report.go).
var (
	shaOld = strings.Repeat("0a", 32)
	shaNew = strings.Repeat("1b", 32)
)

const (
	webID = "spiffe://cluster.local/ns/shop/sa/web"
	dbID  = "spiffe://cluster.local/ns/shop/sa/db"
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

// TestMergeKeysByIdentity: an identity that reports another's instance, on
// the same replica or another, adds a proxy and never replaces the real
// one, so a rotation keeps waiting for it.
func TestMergeKeysByIdentity(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	real := fleet.Proxy{ID: dbID, Instance: "0123456789abcdef", BundleSHA256: shaOld, LastSeen: now.Add(-20 * time.Second)}
	forged := fleet.Proxy{ID: webID, Instance: real.Instance, BundleSHA256: shaNew, LastSeen: now}
	for name, reports := range map[string][]fleet.Report{
		"same replica":    {{Replica: "ca-0", Updated: now, Proxies: []fleet.Proxy{real, forged}}},
		"another replica": {{Replica: "ca-0", Updated: now, Proxies: []fleet.Proxy{real}}, {Replica: "ca-1", Updated: now, Proxies: []fleet.Proxy{forged}}},
	} {
		t.Run(name, func(t *testing.T) {
			v := fleet.Merge(reports, now, 30*time.Second)
			if len(v.Proxies) != 2 {
				t.Fatalf("%d proxies %+v, want both the real one and the forged one", len(v.Proxies), v.Proxies)
			}
			lag := v.Lagging(func(p fleet.Proxy) bool { return p.BundleSHA256 == shaNew })
			if len(lag) != 1 || !strings.Contains(lag[0], dbID) {
				t.Fatalf("lagging %q, want the real proxy still waited for", lag)
			}
		})
	}
}

func report(inst string) fleet.Proxy {
	return fleet.Proxy{
		ID: webID, Instance: inst, BundleSHA256: shaOld, LeafSerial: "9c41a0e1f5d2b3a4c5d6e7f8091a2b3c",
		LeafIssuerSHA256: shaOld, LeafAnchorSHA256: shaNew, LeafNotAfter: time.Unix(1_800_086_400, 0).UTC(),
		Heartbeat: fleet.Duration(10 * time.Second),
	}
}

func TestCheck(t *testing.T) {
	big := strings.Repeat("a", 60<<10)
	tests := []struct {
		name   string
		change func(*fleet.Proxy)
		want   fleet.Reason // "" means accepted
	}{
		{name: "as a proxy sends it", change: func(*fleet.Proxy) {}},
		{name: "before the first bundle and leaf", change: func(p *fleet.Proxy) { *p = fleet.Proxy{ID: p.ID, Instance: p.Instance} }},
		{name: "instance of 64 safe characters", change: func(p *fleet.Proxy) { p.Instance = strings.Repeat("A.b_9-", 10) + "abcd" }},
		{name: "no instance", change: func(p *fleet.Proxy) { p.Instance = "" }, want: fleet.InstanceInvalid},
		{name: "instance of 65 characters", change: func(p *fleet.Proxy) { p.Instance = strings.Repeat("a", 65) }, want: fleet.InstanceInvalid},
		{name: "instance of 60 KiB", change: func(p *fleet.Proxy) { p.Instance = big }, want: fleet.InstanceInvalid},
		{name: "instance with a space", change: func(p *fleet.Proxy) { p.Instance = "a b" }, want: fleet.InstanceInvalid},
		{name: "instance with a newline", change: func(p *fleet.Proxy) { p.Instance = "a\nb" }, want: fleet.InstanceInvalid},
		{name: "instance with a slash", change: func(p *fleet.Proxy) { p.Instance = "../b" }, want: fleet.InstanceInvalid},
		{name: "bundle of 60 KiB", change: func(p *fleet.Proxy) { p.BundleSHA256 = big }, want: fleet.SHA256Invalid},
		{name: "bundle of 63 characters", change: func(p *fleet.Proxy) { p.BundleSHA256 = shaOld[1:] }, want: fleet.SHA256Invalid},
		{name: "bundle in uppercase hex", change: func(p *fleet.Proxy) { p.BundleSHA256 = strings.ToUpper(shaOld) }, want: fleet.SHA256Invalid},
		{name: "issuer not hex", change: func(p *fleet.Proxy) { p.LeafIssuerSHA256 = strings.Repeat("zz", 32) }, want: fleet.SHA256Invalid},
		{name: "anchor of 65 characters", change: func(p *fleet.Proxy) { p.LeafAnchorSHA256 = shaOld + "0" }, want: fleet.SHA256Invalid},
		{name: "serial of 20 octets", change: func(p *fleet.Proxy) { p.LeafSerial = strings.Repeat("ff", 20) }},
		{name: "serial in decimal", change: func(p *fleet.Proxy) { p.LeafSerial = "1234567890" }},
		{name: "serial of 21 octets", change: func(p *fleet.Proxy) { p.LeafSerial = strings.Repeat("ff", 21) }, want: fleet.SerialInvalid},
		{name: "serial of 60 KiB", change: func(p *fleet.Proxy) { p.LeafSerial = big }, want: fleet.SerialInvalid},
		{name: "negative serial", change: func(p *fleet.Proxy) { p.LeafSerial = "-1" }, want: fleet.SerialInvalid},
		{name: "serial with colons", change: func(p *fleet.Proxy) { p.LeafSerial = "9c:41" }, want: fleet.SerialInvalid},
		{name: "longest heartbeat", change: func(p *fleet.Proxy) { p.Heartbeat = fleet.Duration(fleet.MaxHeartbeat) }},
		{name: "negative heartbeat", change: func(p *fleet.Proxy) { p.Heartbeat = -1 }, want: fleet.HeartbeatInvalid},
		{name: "heartbeat of a day", change: func(p *fleet.Proxy) { p.Heartbeat = fleet.Duration(24 * time.Hour) }, want: fleet.HeartbeatInvalid},
		{name: "not after in year 10000", change: func(p *fleet.Proxy) { p.LeafNotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, want: fleet.NotAfterInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := report("0123456789abcdef")
			tt.change(&p)
			err := fleet.Check(p)
			var fe *fleet.Error
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want == "":
				return
			case !errors.As(err, &fe):
				t.Fatalf("error %v, want a *fleet.Error %s", err, tt.want)
			case fe.Reason != tt.want:
				t.Fatalf("reason %s (%v), want %s", fe.Reason, err, tt.want)
			case len(err.Error()) > 300:
				t.Fatalf("the message echoes the input: %d bytes", len(err.Error()))
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakePassiveClock(now)
	r := fleet.NewRegistry(fleet.Config{Clock: clk})
	file := func(p fleet.Proxy) {
		t.Helper()
		if _, err := r.Report(p); err != nil {
			t.Fatal(err)
		}
	}
	a := report("1")
	file(a)
	a.BundleSHA256 = shaNew
	file(a)
	b := report("2")
	b.ID = dbID
	file(b)
	if live := r.Live(); len(live) != 2 || live[1].BundleSHA256 != shaNew {
		t.Fatalf("Live = %+v, want the latest report per proxy", live)
	}
	now = now.Add(fleet.Forget + time.Second)
	clk.SetTime(now)
	if live := r.Live(); len(live) != 0 {
		t.Fatalf("Live after fleet.Forget = %+v, want none", live)
	}
}

// TestRegistryKeysByIdentity: web reports db's instance. db's own report
// stays, web's is kept beside it, and the first report of each that
// shares an instance names the other identity.
func TestRegistryKeysByIdentity(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakePassiveClock(now)
	r := fleet.NewRegistry(fleet.Config{Clock: clk})
	real := report("0123456789abcdef")
	real.ID = dbID
	if shared, err := r.Report(real); err != nil || len(shared) != 0 {
		t.Fatalf("first report: shared %q, %v", shared, err)
	}
	forged := report(real.Instance)
	forged.BundleSHA256 = shaNew
	shared, err := r.Report(forged)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(shared, []string{dbID}) {
		t.Errorf("shared %q, want %s named: two identities claim one instance", shared, dbID)
	}
	if shared, _ := r.Report(forged); len(shared) != 0 {
		t.Errorf("a heartbeat of a known proxy named %q again; the alert is for its first report", shared)
	}
	live := r.Live()
	if len(live) != 2 {
		t.Fatalf("Live = %+v, want both proxies", live)
	}
	for _, p := range live {
		if p.ID == dbID && p.BundleSHA256 != shaOld {
			t.Errorf("db's proxy says bundle %s, want its own report %s", p.BundleSHA256, shaOld)
		}
	}
}

// TestRegistryCaps: an identity over its cap, and then the replica over
// its cap, get their new instances refused while live ones keep
// reporting; a refused report changes nothing; refusals stand in the view
// for fleet.Forget, and room comes back as old proxies are forgotten.
func TestRegistryCaps(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakePassiveClock(now)
	r := fleet.NewRegistry(fleet.Config{Clock: clk, MaxPerIdentity: 3, MaxInstances: 5})
	reason := func(p fleet.Proxy) fleet.Reason {
		_, err := r.Report(p)
		var fe *fleet.Error
		if errors.As(err, &fe) {
			return fe.Reason
		}
		if err != nil {
			t.Fatal(err)
		}
		return ""
	}
	as := func(id, inst string) fleet.Proxy {
		p := report(inst)
		p.ID = id
		return p
	}
	for i := range 3 {
		if got := reason(as(webID, fmt.Sprint(i))); got != "" {
			t.Fatalf("web's instance %d refused: %s", i, got)
		}
	}
	if got := reason(as(webID, "3")); got != fleet.IdentityFull {
		t.Fatalf("web's 4th instance: %q, want %s", got, fleet.IdentityFull)
	}
	if got := reason(as(webID, "0")); got != "" {
		t.Fatalf("a heartbeat of web's live instance 0 was refused (%s): live proxies are never evicted", got)
	}
	for i, want := range []fleet.Reason{"", "", fleet.ReplicaFull} {
		if got := reason(as(dbID, fmt.Sprint(i))); got != want {
			t.Fatalf("db's instance %d: %q, want %q", i, got, want)
		}
	}
	bad := as(webID, "0")
	bad.BundleSHA256 = "x"
	if got := reason(bad); got != fleet.SHA256Invalid {
		t.Fatalf("bad report: %q", got)
	}

	live := r.Live()
	var proxies, standIns []string
	for _, p := range live {
		if p.OverCap {
			standIns = append(standIns, p.ID)
			continue
		}
		proxies = append(proxies, p.ID+"/"+p.Instance)
		if p.BundleSHA256 != shaOld {
			t.Errorf("%s/%s: the refused report changed it", p.ID, p.Instance)
		}
	}
	if want := []string{dbID + "/0", dbID + "/1", webID + "/0", webID + "/1", webID + "/2"}; !slices.Equal(proxies, want) {
		t.Errorf("proxies %q, want %q", proxies, want)
	}
	if want := []string{"", webID}; !slices.Equal(standIns, want) {
		t.Errorf("stand-ins %q, want one for web and one for the replica", standIns)
	}
	v := fleet.Merge([]fleet.Report{{Replica: "ca-0", Updated: now, Proxies: live}}, now, 30*time.Second)
	lag := v.Lagging(func(p fleet.Proxy) bool { return true })
	if len(lag) != 2 || !strings.Contains(lag[1], webID) || !strings.Contains(lag[1], "refused") {
		t.Errorf("lagging %q, want the stand-ins to hold a rotation back even when every proxy is done", lag)
	}

	// web's instance 0 keeps reporting; the others are forgotten, and with
	// them the refusals.
	now = now.Add(fleet.Forget / 2)
	clk.SetTime(now)
	if got := reason(as(webID, "0")); got != "" {
		t.Fatal(got)
	}
	now = now.Add(fleet.Forget/2 + time.Second)
	clk.SetTime(now)
	if got := reason(as(webID, "3")); got != "" {
		t.Fatalf("web's new instance after the old ones were forgotten: %s", got)
	}
	if live := r.Live(); len(live) != 2 || live[0].OverCap || live[1].OverCap {
		t.Fatalf("Live = %+v, want web's instances 0 and 3 and no stand-in", live)
	}
}
