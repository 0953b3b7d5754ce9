package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/rotation"
)

// publishedFleet reads the fleet report replica published in ns (its
// manifest and shards, through fleet.Read), and its size in bytes (every
// ConfigMap of it).
func publishedFleet(t *testing.T, ns, replica string) (fleet.Report, int) {
	t.Helper()
	cms, err := need(t).client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		return fleet.Report{}, 0
	}
	name, size := fleet.ConfigMapPrefix+replica, 0
	for _, cm := range cms.Items {
		if cm.Name == name || strings.HasPrefix(cm.Name, name+"-s") {
			size += len(cm.Data[fleet.ConfigMapKey]) + len(cm.Data[fleet.ShardKey])
		}
	}
	for _, rep := range fleet.Read(cms.Items, time.Now()) {
		if rep.Replica == replica {
			return rep, size
		}
	}
	return fleet.Report{}, 0
}

// waitProxy waits until replica publishes a proxy of id, and returns it.
func waitProxy(t *testing.T, ns, replica, id string) fleet.Proxy {
	t.Helper()
	var found fleet.Proxy
	eventually(t, 30*time.Second, func() error {
		rep, _ := publishedFleet(t, ns, replica)
		for _, p := range rep.Proxies {
			if p.ID == id && !p.OverCap {
				found = p
				return nil
			}
		}
		return fmt.Errorf("%s has not published a proxy of %s", replica, id)
	})
	return found
}

// svidClient certifies as ns/sa and returns a client of the CA that
// presents that SVID, as a proxy reporting its status does.
func svidClient(t *testing.T, ca *caProcess, ns, sa string) identityv1.IdentityClient {
	t.Helper()
	issued, err := rotation.Certify(context.Background(), ca.client, token(t, ns, sa, audience, nil), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := rotation.DialCA(ca.addr, ca.bundle.X509Bundle(trustDomain), ca.id(t), rotation.WithClientCertificate(issued.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return identityv1.NewIdentityClient(conn)
}

// TestFleetForgedReport: workload a, with its own valid SVID, reports the
// instance of b's proxy, which is frozen (cut off from the CA), with
// whatever bundle the CA streams, to make a rotation believe b converged.
// b's own entry survives in the published fleet beside a's, the CA counts
// and logs the conflict, and the rotation's stage Add waits for b.
func TestFleetForgedReport(t *testing.T) {
	t.Parallel()
	e := need(t)
	ca := startCA(t, "--fleet-report-interval", "500ms", "--replica", "ca-0")
	ns := namespace(t, "forge")
	serviceAccount(t, ns, "a")
	serviceAccount(t, ns, "b")
	aID, bID := "spiffe://cluster.local/ns/"+ns+"/sa/a", "spiffe://cluster.local/ns/"+ns+"/sa/b"
	b := startProxy(t, ca, ns, "b")
	real := waitProxy(t, ca.ns, "ca-0", bID)
	if err := syscall.Kill(b.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	// a follows the bundle stream and reports b's instance with every bundle
	// it sees, twice a second.
	a := svidClient(t, ca, ns, "a")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	stream, err := a.WatchBundle(ctx, &identityv1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles := make(chan string, 16)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case bundles <- msg.GetSha256():
			case <-ctx.Done():
				return
			}
		}
	}()
	var forgeErr error
	go func() {
		defer wg.Done()
		var sha string
		select {
		case sha = <-bundles:
		case <-ctx.Done():
			return
		}
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			_, err := a.ReportStatus(ctx, &identityv1.ProxyStatus{Instance: real.Instance, BundleSha256: sha, HeartbeatSeconds: 10})
			if err != nil && ctx.Err() == nil && forgeErr == nil {
				forgeErr = err
			}
			select {
			case <-ctx.Done():
				return
			case sha = <-bundles:
			case <-tick.C:
			}
		}
	}()

	// Both entries are published, b's with b's own report.
	eventually(t, 30*time.Second, func() error {
		rep, _ := publishedFleet(t, ca.ns, "ca-0")
		var got []string
		for _, p := range rep.Proxies {
			if p.Instance != real.Instance {
				continue
			}
			got = append(got, p.ID)
			if p.ID == bID && (p.BundleSHA256 != real.BundleSHA256 || p.LeafSerial != real.LeafSerial) {
				return fmt.Errorf("b's entry changed: %+v, was %+v", p, real)
			}
		}
		if len(got) != 2 {
			return fmt.Errorf("instance %s published for %q, want both %s and %s", real.Instance, got, aID, bID)
		}
		return nil
	})
	if v := ca.metric(t, "meshid_ca_fleet_instance_conflicts_total"); v != 1 {
		t.Errorf("meshid_ca_fleet_instance_conflicts_total = %v, want 1", v)
	}
	if log := ca.logs(t); !strings.Contains(log, "two identities report the same proxy instance") || !strings.Contains(log, aID) {
		t.Errorf("the CA did not warn about the shared instance naming %s", aID)
	}

	// A rotation waits for the frozen b, although a reports its instance as
	// converged.
	out, code := meshid(t, "", "rotate-anchor", "start", "-n", ca.ns, "--kubeconfig", e.cluster.Kubeconfig,
		"--generate", "--write-anchor-key", filepath.Join(t.TempDir(), "new-anchor.key"), "--stage-timeout", "5s")
	if code != 1 || !strings.Contains(out, "stage Add did not converge") || !strings.Contains(out, bID) {
		t.Fatalf("rotation with b frozen and a reporting for it: exit %d\n%s", code, out)
	}
	cancel()
	wg.Wait()
	if forgeErr != nil {
		t.Errorf("a's forged reports were refused (%v): they are a's to make, only never in b's name", forgeErr)
	}
	t.Logf("b's entry survived a's reports for its instance; the rotation named b:\n%s", out)
}

// flood sends n reports as client, from 8 workers, each changed by change
// from a valid one for instance prefix-i, and counts the answers by code.
func flood(t *testing.T, client identityv1.IdentityClient, n int, prefix string, change func(*identityv1.ProxyStatus)) map[codes.Code]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := map[codes.Code]int{}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				st := &identityv1.ProxyStatus{Instance: fmt.Sprintf("%s-%d", prefix, i), BundleSha256: strings.Repeat("ab", 32), HeartbeatSeconds: 10}
				change(st)
				_, err := client.ReportStatus(ctx, st)
				mu.Lock()
				got[status.Code(err)]++
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return got
}

// TestFleetFlood: workloads with valid SVIDs flood the CA with status
// reports: thousands of instances, fields of 60 KiB, requests over the
// size limit. Each refusal has its code and is counted by reason; the
// published fleet stays small, holds the real proxy, and stands in for
// what was refused, so a rotation would wait.
func TestFleetFlood(t *testing.T) {
	t.Parallel()
	const perIdentity, perReplica, n = 50, 120, 1000
	ca := startCA(t, "--fleet-report-interval", "500ms", "--replica", "ca-0",
		"--max-fleet-instances-per-identity", fmt.Sprint(perIdentity), "--max-fleet-instances", fmt.Sprint(perReplica))
	ns := namespace(t, "flood")
	for _, sa := range []string{"a", "c", "d", "real"} {
		serviceAccount(t, ns, sa)
	}
	realID := "spiffe://cluster.local/ns/" + ns + "/sa/real"
	startProxy(t, ca, ns, "real")
	waitProxy(t, ca.ns, "ca-0", realID)
	refused := func(reason string) float64 {
		return ca.metric(t, `meshid_ca_fleet_reports_refused_total{reason="`+reason+`"}`)
	}
	start := time.Now()
	noChange := func(*identityv1.ProxyStatus) {}

	// Many instances: a and c fill their caps, d fills the replica's.
	a, c, d := svidClient(t, ca, ns, "a"), svidClient(t, ca, ns, "c"), svidClient(t, ca, ns, "d")
	for _, tt := range []struct {
		name   string
		client identityv1.IdentityClient
		ok     int
	}{
		{"a", a, perIdentity},
		{"c", c, perIdentity},
		{"d", d, perReplica - 1 - 2*perIdentity}, // the real proxy holds one
	} {
		got := flood(t, tt.client, n, tt.name, noChange)
		t.Logf("%s: %d instances: %v", tt.name, n, got)
		if got[codes.OK] != tt.ok || got[codes.ResourceExhausted] != n-tt.ok {
			t.Errorf("%s: %v, want %d OK and the rest RESOURCE_EXHAUSTED", tt.name, got, tt.ok)
		}
	}
	if v := refused("identity_full"); v != 2*(n-perIdentity) {
		t.Errorf("refused{identity_full} = %v, want %d", v, 2*(n-perIdentity))
	}
	if v := refused("replica_full"); v != n-(perReplica-1-2*perIdentity) {
		t.Errorf("refused{replica_full} = %v, want %d", v, n-(perReplica-1-2*perIdentity))
	}

	// Oversized fields, inside the size of a request.
	big := strings.Repeat("f", 60<<10)
	for _, tt := range []struct {
		reason string
		change func(*identityv1.ProxyStatus)
	}{
		{"sha256_invalid", func(s *identityv1.ProxyStatus) { s.BundleSha256 = big }},
		{"instance_invalid", func(s *identityv1.ProxyStatus) { s.Instance = big }},
		{"serial_invalid", func(s *identityv1.ProxyStatus) { s.LeafSerial = big }},
	} {
		const m = 100
		got := flood(t, a, m, "big", tt.change)
		if got[codes.InvalidArgument] != m {
			t.Errorf("%s: %v, want %d INVALID_ARGUMENT", tt.reason, got, m)
		}
		if v := refused(tt.reason); v != m {
			t.Errorf("refused{%s} = %v, want %d", tt.reason, v, m)
		}
	}

	// Requests over the size limit, refused by gRPC before they are read.
	huge := strings.Repeat("f", 70<<10)
	got := flood(t, a, 10, "huge", func(s *identityv1.ProxyStatus) { s.Instance = huge })
	if got[codes.ResourceExhausted] != 10 {
		t.Errorf("reports of 70 KiB: %v, want 10 RESOURCE_EXHAUSTED", got)
	}
	if v := refused("request_too_large"); v != 10 {
		t.Errorf("refused{request_too_large} = %v, want 10", v)
	}
	_, err := ca.client.Certify(context.Background(), &identityv1.CertifyRequest{Token: huge})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Certify of 70 KiB: %v, want RESOURCE_EXHAUSTED", err)
	}
	if v := ca.metric(t, `meshid_ca_certificates_refused_total{reason="request_too_large"}`); v != 1 {
		t.Errorf(`certificates_refused_total{reason="request_too_large"} = %v, want 1`, v)
	}
	t.Logf("%d reports and a certify refused or filed in %s", 3*n+300+10+1, time.Since(start).Round(time.Millisecond))

	// The published fleet: the real proxy, the instances within the caps,
	// a stand-in for each cap that refused, and nothing large.
	var size int
	eventually(t, 30*time.Second, func() error {
		rep, n := publishedFleet(t, ca.ns, "ca-0")
		size = n
		proxies, standIns, realSeen := 0, map[string]bool{}, false
		for _, p := range rep.Proxies {
			switch {
			case p.OverCap:
				standIns[p.ID] = true
			case p.ID == realID:
				realSeen = true
				fallthrough
			default:
				proxies++
			}
		}
		aID := "spiffe://cluster.local/ns/" + ns + "/sa/a"
		if proxies != perReplica || !realSeen || !standIns[aID] || !standIns[""] {
			return fmt.Errorf("published %d proxies (the real one: %t) and stand-ins %v; want %d, the real one, and stand-ins for a and the replica", proxies, realSeen, standIns, perReplica)
		}
		return nil
	})
	rss := ca.metric(t, "process_resident_memory_bytes") / (1 << 20)
	t.Logf("fleet ConfigMap: %d bytes for %d proxies; CA RSS %.1f MiB", size, perReplica, rss)
	if size > perReplica*700 {
		t.Errorf("fleet ConfigMap of %d bytes, want at most 700 per proxy", size)
	}
}
