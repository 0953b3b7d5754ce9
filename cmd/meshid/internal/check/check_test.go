package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	ct "github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/rotation/health"
)

const ns = ct.NS

// TestRows drives check through every row it can print (checktest.Cases),
// one cluster (or proxy) state each, and checks the printed rows, their
// hints, and the exit.
func TestRows(t *testing.T) {
	for _, tt := range ct.Cases() {
		t.Run(tt.Name, func(t *testing.T) {
			w := ct.New(t, ct.Now)
			if tt.Mod != nil {
				tt.Mod(t, w)
			}
			var out bytes.Buffer
			err := check.Run(context.Background(), w.Options(), &out)
			if tt.Problem != (err != nil) {
				t.Fatalf("Run = %v, want a problem: %v\n%s", err, tt.Problem, out.String())
			}
			if err != nil && err != check.ErrProblems {
				t.Fatalf("Run = %v, want check.ErrProblems", err)
			}
			for _, re := range tt.Want {
				if !re.MatchString(out.String()) {
					t.Errorf("nothing matches %s in\n%s", re, out.String())
				}
			}
			for _, h := range tt.Hints {
				if !ct.Hint(h, "").MatchString(out.String()) {
					t.Errorf("no hint for %q in\n%s", h, out.String())
				}
			}
			for _, a := range tt.Absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("%q printed:\n%s", a, out.String())
				}
			}
			wantStatus := "Status: OK"
			switch {
			case tt.Problem && !strings.Contains(tt.Name, "fail-on-warning"):
				wantStatus = "Status: FAIL"
			case len(tt.Hints) > 0:
				wantStatus = "Status: WARN"
			}
			if !strings.HasSuffix(out.String(), wantStatus+"\n") {
				t.Errorf("output does not end with %q:\n%s", wantStatus, out.String())
			}
			for _, placeholder := range []string{"NAMESPACE", "NAME ", "POD", "REPLICA"} {
				for _, line := range strings.Split(out.String(), "\n") {
					if strings.HasPrefix(line, "hint: ") && strings.Contains(line, placeholder) {
						t.Errorf("a hint with a placeholder %q: %s", placeholder, line)
					}
				}
			}
		})
	}
}

// TestTable checks the whole table of a healthy cluster: the columns, the
// time to outage (the issuer in force, the earliest expiry) and the status.
func TestTable(t *testing.T) {
	w := ct.New(t, ct.Now)
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.Options(), &out); err != nil {
		t.Fatal(err)
	}
	anchor, iss := bundle.Fingerprint(w.Anchor.Cert)[:12], w.Issuer.Fingerprint()[:12]
	want := fmt.Sprintf(`CHECK                              STATUS  EXPIRES IN  DETAIL
api server                         OK      -           reachable, Kubernetes v1.34.4
namespace meshid                   OK      -           exists
rbac                               OK      -           jane@example.com may make the 7 reads check makes
bundle meshid/meshid-trust-bundle  OK      -           in force on 2 of 2 replicas: 1 anchor(s), sha256 %.12s
anchor 0 anchor (%s)     OK      364d        CA, valid for 364d more; used by the issuer in force
issuer meshid/meshid-issuer        OK      47h00m      in force on 2 of 2 replicas: CN=issuer,O=meshid, sha256 %s, chains to anchor %s, valid for 47h00m more
ca replicas meshid/meshid-ca       OK      -           2 of 2 ready
ca reports meshid/meshid-fleet-*   OK      -           2 replica(s) report (meshid-ca-a, meshid-ca-b), the latest 2s ago
proxies                            OK      -           no proxy reports to the CA replicas

Time to outage: 47h00m (issuer meshid/meshid-issuer in force, at 2030-06-03T11:00:00Z)
Status: OK
`, w.BundleSHA(t), anchor, iss, anchor)
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestAnchorsToldApart: two anchors of one name during a rotation have
// rows of their own, named by fingerprint.
func TestAnchorsToldApart(t *testing.T) {
	w := ct.New(t, ct.Now)
	next := pkitest.CA(t, nil, "anchor", w.Now.Add(-time.Hour), 2*ct.Year)
	w.Bundle.Data[bundle.Key] += string(next.CertPEM())
	w.InForceAnchors = append(w.InForceAnchors, w.Anchor.Cert, next.Cert)
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.Options(), &out); err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{bundle.Fingerprint(w.Anchor.Cert), bundle.Fingerprint(next.Cert)} {
		if re := regexp.MustCompile(fmt.Sprintf(`(?m)^anchor %d anchor \(%s\)\s+OK`, i, a[:12])); !re.MatchString(out.String()) {
			t.Errorf("no row %s in\n%s", re, out.String())
		}
	}
}

// TestFleetSummary: with many proxies, the table summarises them and lists
// only the lagging ones by name; -o json carries every one.
func TestFleetSummary(t *testing.T) {
	w := ct.New(t, ct.Now)
	for i := range 500 {
		w.Fleet = append(w.Fleet, w.Reported(t, ct.Web, fmt.Sprintf("%016x", i)))
	}
	lagA := w.Reported(t, spiffeid.RequireFromPath(ct.TD, "/ns/shop/sa/a"), "00000000000000aa")
	lagA.BundleSHA256 = strings.Repeat("ab", 32)
	lagB := w.Reported(t, spiffeid.RequireFromPath(ct.TD, "/ns/shop/sa/b"), "00000000000000bb")
	lagB.LastSeen = w.Now.Add(-time.Minute)
	w.Fleet = append(w.Fleet, lagA, lagB)

	var out bytes.Buffer
	if err := check.Run(context.Background(), w.Options(), &out); err != nil {
		t.Fatalf("Run = %v (warnings only)\n%s", err, out.String())
	}
	if re := ct.Row("proxies", health.Warn, "502 reported: 500 ok, 2 lagging"); !re.MatchString(out.String()) {
		t.Errorf("no summary %s in\n%s", re, out.String())
	}
	var listed []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "proxy ") {
			listed = append(listed, strings.Fields(line)[1])
		}
	}
	if want := []string{"spiffe://cluster.local/ns/shop/sa/a", "spiffe://cluster.local/ns/shop/sa/b"}; strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Errorf("proxies listed by name: %q, want only the lagging %q", listed, want)
	}

	o := w.Options()
	o.Output = "json"
	out.Reset()
	if err := check.Run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Fleet []struct {
			ID, Instance, Status string
		} `json:"fleet"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	lagging := 0
	for _, p := range doc.Fleet {
		if p.Status != "ok" {
			lagging++
		}
	}
	if len(doc.Fleet) != 502 || lagging != 2 {
		t.Fatalf("-o json lists %d proxies, %d lagging; want 502, 2", len(doc.Fleet), lagging)
	}
}

// TestNoOutageWhenNothingReads: with neither bundle nor issuer nor a
// replica's report, the time to outage is unknown, and says why.
func TestNoOutageWhenNothingReads(t *testing.T) {
	w := ct.New(t, time.Now())
	w.Bundle, w.IssuerSecret, w.Replicas = nil, nil, nil
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.Options(), &out); err != check.ErrProblems {
		t.Fatalf("Run = %v, want check.ErrProblems", err)
	}
	if !strings.Contains(out.String(), "\nTime to outage: unknown: no issuer in force could be read\n") {
		t.Fatalf("no unknown time to outage:\n%s", out.String())
	}
	// It exits 1 and prints no error line of its own: the rows said it.
	var stderr bytes.Buffer
	if code := cli.Code(&stderr, check.ErrProblems); code != cli.ExitProblem || stderr.Len() != 0 {
		t.Fatalf("exit %d, printed %q", code, stderr.String())
	}
}

// TestJSON: -o json is one document: the rows, the status, the time to
// outage and the fleet.
func TestJSON(t *testing.T) {
	w := ct.New(t, ct.Now)
	w.Deployment.Status.ReadyReplicas = 1
	w.Fleet = []fleet.Proxy{w.Reported(t, ct.Web, "0000000000000001")}
	w.Opts = func(o *check.Options) { o.Output = "json" }
	var out bytes.Buffer
	if err := check.Run(context.Background(), w.Options(), &out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	var got struct {
		At     time.Time     `json:"at"`
		Checks []health.Row  `json:"checks"`
		Status health.Status `json:"status"`
		Until  time.Time     `json:"time_to_outage_at"`
		Of     string        `json:"time_to_outage_of"`
		Fleet  []struct {
			ID     string        `json:"id"`
			Status health.Status `json:"status"`
		} `json:"fleet"`
	}
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if dec.More() {
		t.Fatalf("more than one document:\n%s", out.String())
	}
	statuses := map[string]health.Row{}
	for _, r := range got.Checks {
		statuses[r.Check] = r
	}
	if got.Status != health.Warn || statuses[ct.CARow].Status != health.Warn || statuses[ct.CARow].Detail != "1 of 2 ready" || !got.At.Equal(ct.Now) {
		t.Fatalf("got %+v", got)
	}
	if !got.Until.Equal(w.Issuer.NotAfter()) || got.Of != ct.IssuerRow+" in force" {
		t.Fatalf("time to outage %s of %q, want the issuer's %s", got.Until, got.Of, w.Issuer.NotAfter())
	}
	if len(got.Fleet) != 1 || got.Fleet[0].ID != ct.Web.String() || got.Fleet[0].Status != health.OK {
		t.Fatalf("fleet %+v, want the reported proxy, ok", got.Fleet)
	}
}

// TestConnect: the clients are built once, from --kubeconfig, and a
// failure to build them is the command's error.
func TestConnect(t *testing.T) {
	w := ct.New(t, time.Now())
	o := w.Options()
	real := o.Connect
	var calls []string
	o.Cluster.Kubeconfig = "/path/kubeconfig"
	o.Connect = func(t kube.Target, agent string) (*kube.Clients, error) {
		kubeconfig := t.Kubeconfig
		calls = append(calls, kubeconfig+" "+agent)
		return real(t, agent)
	}
	if err := check.Run(context.Background(), o, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != "/path/kubeconfig meshid-check" {
		t.Fatalf("Connect calls %q, want one for /path/kubeconfig as meshid-check", calls)
	}
	boom := errors.New("no kubeconfig")
	o.Connect = func(kube.Target, string) (*kube.Clients, error) { return nil, boom }
	var out bytes.Buffer
	if err := check.Run(context.Background(), o, &out); !errors.Is(err, boom) || out.Len() != 0 {
		t.Fatalf("Run = %v, printed %q; want the Connect error and nothing printed", err, out.String())
	}
}

// TestHintsNameCluster: a hint's commands repeat the --kubeconfig and
// --context check was given, so they reach the same cluster.
func TestHintsNameCluster(t *testing.T) {
	for _, c := range []struct {
		name string
		t    kube.Target
		want string
	}{
		{"kubeconfig", kube.Target{Kubeconfig: "/etc/meshid/admin.kubeconfig"}, "`kubectl --kubeconfig /etc/meshid/admin.kubeconfig -n meshid describe deployment meshid-ca`"},
		{"context", kube.Target{Context: "prod-eu"}, "`kubectl --context prod-eu -n meshid describe deployment meshid-ca`"},
		{"both", kube.Target{Kubeconfig: "/k", Context: "prod eu"}, "`kubectl --kubeconfig /k --context 'prod eu' -n meshid describe deployment meshid-ca`"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := ct.New(t, ct.Now)
			w.Deployment.Status.ReadyReplicas = 0
			o := w.Options()
			o.Cluster = c.t
			var out bytes.Buffer
			if err := check.Run(context.Background(), o, &out); err != check.ErrProblems {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), c.want) {
				t.Fatalf("no %s in\n%s", c.want, out.String())
			}
		})
	}
}

// lockedBuffer is written by Run's goroutine and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestWatch: --watch prints every row once, then only the rows whose status
// changed, every --interval, and returns nil when the context ends.
func TestWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := ct.New(t, time.Now())
		w.Replicas = nil
		o := w.Options()
		connect, client := w.Connect()
		o.Connect, o.Clock, o.Watch = connect, clock.RealClock{}, true
		start := time.Now().UTC()
		ctx, cancel := context.WithCancel(context.Background())
		var out lockedBuffer
		done := make(chan error)
		go func() { done <- check.Run(ctx, o, &out) }()

		synctest.Wait()
		first := out.String()
		if n := strings.Count(first, "\n"); n != 8 {
			t.Fatalf("first round printed %d lines, want one per row (8):\n%s", n, first)
		}
		if !strings.HasPrefix(first, start.Format(time.RFC3339)+"  ok    api server: reachable") {
			t.Fatalf("first line: %q", first)
		}

		time.Sleep(o.Interval)
		synctest.Wait()
		if got := out.String(); got != first {
			t.Fatalf("nothing changed, yet it printed %q", strings.TrimPrefix(got, first))
		}

		d := w.Deployment.DeepCopy()
		d.Status.ReadyReplicas = 0
		if _, err := client.AppsV1().Deployments(ns).UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(o.Interval)
		synctest.Wait()
		want := start.Add(2*o.Interval).Format(time.RFC3339) + "  fail  " + ct.CARow + ": 0 of 2 ready\n"
		if got := strings.TrimPrefix(out.String(), first); got != want {
			t.Fatalf("after the change it printed %q, want %q", got, want)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v after the context ended, want nil", err)
		}
	})
}

// TestWatchJSON: --watch -o json prints one JSON document per line: the
// whole report, once at the start and again whenever a row's status
// changes.
func TestWatchJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := ct.New(t, time.Now())
		w.Replicas = nil
		o := w.Options()
		connect, client := w.Connect()
		o.Connect, o.Clock, o.Watch, o.Output = connect, clock.RealClock{}, true, "json"
		ctx, cancel := context.WithCancel(context.Background())
		var out lockedBuffer
		done := make(chan error)
		go func() { done <- check.Run(ctx, o, &out) }()

		synctest.Wait()
		time.Sleep(o.Interval) // nothing changes: nothing printed
		synctest.Wait()
		d := w.Deployment.DeepCopy()
		d.Status.ReadyReplicas = 0
		if _, err := client.AppsV1().Deployments(ns).UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(o.Interval)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("printed %d lines, want 2 (the start, the change):\n%s", len(lines), out.String())
		}
		for i, want := range []health.Status{health.Warn, health.Fail} {
			var doc struct {
				Status health.Status `json:"status"`
				Checks []health.Row  `json:"checks"`
			}
			if err := json.Unmarshal([]byte(lines[i]), &doc); err != nil {
				t.Fatalf("line %d is not one JSON document: %v\n%s", i, err, lines[i])
			}
			if doc.Status != want || len(doc.Checks) != 8 {
				t.Fatalf("line %d: status %s with %d checks, want %s with 8", i, doc.Status, len(doc.Checks), want)
			}
		}
	})
}

func TestValidate(t *testing.T) {
	valid := func() *check.Options {
		return &check.Options{TrustDomain: identity.DefaultTrustDomain, Interval: time.Second, Output: "table"}
	}
	tests := []struct {
		name    string
		mod     func(*check.Options)
		message string
	}{
		{name: "table", mod: func(*check.Options) {}},
		{name: "json", mod: func(o *check.Options) { o.Output = "json" }},
		{name: "yaml", mod: func(o *check.Options) { o.Output = "yaml" }, message: `-o "yaml": use table or json`},
		{name: "bad trust domain", mod: func(o *check.Options) { o.TrustDomain = "Not Valid" }, message: `--trust-domain "Not Valid"`},
		{name: "zero interval", mod: func(o *check.Options) { o.Interval = 0 }, message: "--interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mod(o)
			clitest.WantUsage(t, "Validate", o.Validate(), tt.message)
		})
	}
}
