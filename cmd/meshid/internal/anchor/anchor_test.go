package anchor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/cli/clitest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/anchor"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/issuer"
	rotator "github.com/meshid/meshid/rotation/anchor"
)

var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeRotator records what the verbs ask of it.
type fakeRotator struct {
	cfg      rotator.Config
	calls    []string
	start    rotator.StartParams
	status   *rotator.Status
	left     *rotator.Leftovers
	err      error
	checkErr error    // CheckStart's answer
	events   []string // what Start says, through the Config
}

func (f *fakeRotator) CheckStart(_ context.Context, p rotator.StartParams) error {
	f.calls = append(f.calls, "check-start")
	return f.checkErr
}

func (f *fakeRotator) Start(_ context.Context, p rotator.StartParams) error {
	f.calls, f.start = append(f.calls, "start"), p
	for _, e := range f.events {
		if f.cfg.Events != nil {
			f.cfg.Events(rotator.Event{Time: now, Stage: rotator.Add, Message: e})
		} else {
			fmt.Fprintln(f.cfg.Out, e)
		}
	}
	return f.err
}

func (f *fakeRotator) ForceAbort(context.Context) (*rotator.Leftovers, error) {
	f.calls = append(f.calls, "force-abort")
	return f.left, f.err
}
func (f *fakeRotator) Resume(context.Context) error {
	f.calls = append(f.calls, "resume")
	return f.err
}
func (f *fakeRotator) Abort(context.Context) error { f.calls = append(f.calls, "abort"); return f.err }
func (f *fakeRotator) Status(context.Context) (*rotator.Status, error) {
	f.calls = append(f.calls, "status")
	return f.status, nil
}

// setup returns rotate-anchor's flag defaults wired to client and f (nil f:
// the real Rotator), and the Connect calls it records.
func setup(client *fake.Clientset, f *fakeRotator) (*anchor.Options, *[]string) {
	var connects []string
	o := &anchor.Options{
		Cluster: kube.Target{Kubeconfig: "/path/kubeconfig"}, Namespace: "meshid", StageTimeout: 10 * time.Minute, Output: "table", ReissueWindow: 30 * time.Second,
		Connect: func(t kube.Target, agent string) (*kube.Clients, error) {
			connects = append(connects, t.Kubeconfig+" "+agent)
			return &kube.Clients{Kube: client}, nil
		},
		Clock: clocktesting.NewFakePassiveClock(now),
	}
	if f != nil {
		o.NewRotator = func(cfg rotator.Config) (anchor.Rotator, error) { f.cfg = cfg; return f, nil }
	}
	return o, &connects
}

func TestPlan(t *testing.T) {
	o, connects := setup(fake.NewClientset(), &fakeRotator{})
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Plan, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "STAGE") || !strings.Contains(lines[0], "ADVANCES WHEN") {
		t.Fatalf("plan:\n%s", out.String())
	}
	for i, s := range rotator.Stages {
		if !strings.HasPrefix(lines[i+1], string(rune('1'+i))+" "+string(s)+" ") {
			t.Errorf("line %d is %q, want stage %d %s", i+1, lines[i+1], i+1, s)
		}
	}
	if len(*connects) != 0 {
		t.Fatalf("plan talked to the cluster: %q", *connects)
	}
}

// TestVerbs: each verb reaches the Rotator built from the flags, once,
// and its error is the command's.
func TestVerbs(t *testing.T) {
	for _, verb := range []string{anchor.Resume, anchor.Abort} {
		t.Run(verb, func(t *testing.T) {
			client := fake.NewClientset()
			f := &fakeRotator{}
			o, connects := setup(client, f)
			var out bytes.Buffer
			if err := anchor.Run(context.Background(), o, verb, &out); err != nil {
				t.Fatal(err)
			}
			if len(f.calls) != 1 || f.calls[0] != verb {
				t.Fatalf("Rotator calls %q, want %s", f.calls, verb)
			}
			if len(*connects) != 1 || (*connects)[0] != "/path/kubeconfig meshid-rotate-anchor" {
				t.Fatalf("Connect calls %q", *connects)
			}
			if f.cfg.Client != client || f.cfg.Namespace != "meshid" || f.cfg.StageTimeout != 10*time.Minute || f.cfg.Out != &out {
				t.Fatalf("Rotator config %+v, want the flags' client, namespace, stage timeout and output", f.cfg)
			}
			f.err = errors.New("anchor: a rotation is stuck")
			if err := anchor.Run(context.Background(), o, verb, &out); !errors.Is(err, f.err) {
				t.Fatalf("Run = %v, want the Rotator's error", err)
			}
		})
	}
	t.Run("connect error", func(t *testing.T) {
		f := &fakeRotator{}
		o, _ := setup(nil, f)
		boom := errors.New("no kubeconfig")
		o.Connect = func(kube.Target, string) (*kube.Clients, error) { return nil, boom }
		if err := anchor.Run(context.Background(), o, anchor.Status, &bytes.Buffer{}); !errors.Is(err, boom) || len(f.calls) != 0 {
			t.Fatalf("Run = %v, Rotator calls %q; want the Connect error and no call", err, f.calls)
		}
	})
}

func TestStartGenerate(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration // flag; 0: default
		want time.Duration
	}{
		{name: "default lifetime", want: 3650 * 24 * time.Hour},
		{name: "--anchor-ttl", ttl: 400 * 24 * time.Hour, want: 400 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeRotator{}
			o, _ := setup(fake.NewClientset(), f)
			o.Generate, o.AnchorTTL, o.WriteAnchorKey = true, tt.ttl, filepath.Join(t.TempDir(), "new-anchor.key")
			o.CertManager, o.Emergency, o.Force, o.ReissueWindow = true, true, true, time.Minute
			var out bytes.Buffer
			if err := anchor.Run(context.Background(), o, anchor.Start, &out); err != nil {
				t.Fatal(err)
			}
			p := f.start
			if len(f.calls) != 2 || f.calls[0] != "check-start" || f.calls[1] != "start" || !p.CertManager || !p.Emergency || !p.Force || p.ReissueWindow != time.Minute {
				t.Fatalf("Rotator calls %q with %+v, want one start with the flags", f.calls, p)
			}
			kp, err := issuer.Parse(p.NewAnchorCertPEM, p.NewAnchorKeyPEM)
			if err != nil {
				t.Fatalf("the new anchor: %v", err)
			}
			if !kp.Cert.NotBefore.Equal(now.Add(-time.Hour)) || kp.Cert.NotAfter.Sub(kp.Cert.NotBefore) != tt.want || kp.Cert.Subject.CommonName != "meshid trust anchor" {
				t.Fatalf("new anchor %s valid %s to %s, want from an hour before now for %s", kp.Cert.Subject, kp.Cert.NotBefore, kp.Cert.NotAfter, tt.want)
			}
			fi, err := os.Stat(o.WriteAnchorKey)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v, mode %v; want 0600", err, fi)
			}
			if saved, _ := os.ReadFile(o.WriteAnchorKey); !bytes.Equal(saved, p.NewAnchorKeyPEM) {
				t.Fatal("the saved key is not the one the rotation got")
			}
			want := "generated the new anchor meshid trust anchor (SHA-256 " + kp.Fingerprint() + "), valid until " + kp.Cert.NotAfter.UTC().Format(time.RFC3339) + "\n" +
				"its private key is in " + o.WriteAnchorKey + " (mode 0600)\n"
			if out.String() != want {
				t.Fatalf("printed\n%q\nwant\n%q", out.String(), want)
			}
		})
	}
}

func TestStartFiles(t *testing.T) {
	dir := t.TempDir()
	kp := pkitest.CA(t, nil, "next anchor", now, 365*24*time.Hour)
	key, err := kp.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := pkitest.File(t, dir, "a.crt", kp.CertPEM()), pkitest.File(t, dir, "a.key", key)
	missing := filepath.Join(dir, "missing")

	f := &fakeRotator{}
	o, _ := setup(fake.NewClientset(), f)
	o.NewAnchorCert, o.NewAnchorKey = certFile, keyFile
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Start, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.start.NewAnchorCertPEM, kp.CertPEM()) || !bytes.Equal(f.start.NewAnchorKeyPEM, key) || out.Len() != 0 {
		t.Fatalf("start got other material than the files, or printed %q", out.String())
	}

	// A certificate given as the key: both flags and files are named, and
	// nothing is asked of the cluster.
	f = &fakeRotator{}
	o, _ = setup(fake.NewClientset(), f)
	o.NewAnchorCert, o.NewAnchorKey = certFile, certFile
	err = anchor.Run(context.Background(), o, anchor.Start, &bytes.Buffer{})
	if want := "--new-anchor-cert " + certFile + ", --new-anchor-key " + certFile + ": tls: found a certificate rather than a key in the PEM for the private key; give the new anchor's PEM certificate and its PEM private key"; err == nil || cli.Message(err) != want || len(f.calls) != 0 {
		t.Fatalf("Run with the certificate as key = %v, Rotator calls %q; want %q", err, f.calls, want)
	}

	for _, files := range [][2]string{{missing, keyFile}, {certFile, missing}} {
		f := &fakeRotator{}
		o, _ := setup(fake.NewClientset(), f)
		o.NewAnchorCert, o.NewAnchorKey = files[0], files[1]
		if err := anchor.Run(context.Background(), o, anchor.Start, &bytes.Buffer{}); !errors.Is(err, os.ErrNotExist) || len(f.calls) != 0 {
			t.Fatalf("Run with %q = %v, Rotator calls %q; want not found, and no start", files, err, f.calls)
		}
	}
}

func TestStatus(t *testing.T) {
	st := &rotator.Status{
		State: &rotator.State{
			Stage: rotator.Reissue, Aborting: true, Started: now.Add(-90 * time.Second),
			Message: "waiting for 1 proxy", Timings: map[rotator.Stage]string{rotator.Add: "12s", rotator.SwitchIssuer: "3s"},
		},
		Fleet:   fleet.View{Replicas: []fleet.Report{{Replica: "ca-0"}, {Replica: "ca-1"}}},
		Waiting: "leaves from the new issuer", Ready: 2, Total: 3, Lagging: []string{"spiffe://cluster.local/ns/shop/sa/web (web-1)"},
	}
	f := &fakeRotator{status: st}
	o, _ := setup(fake.NewClientset(), f)
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Status, &out); err != nil {
		t.Fatal(err)
	}
	want := `Stage         Reissue (aborting)
Started       2030-06-01T11:58:30Z (1m30s ago)
Converged     2/3 leaves from the new issuer
Lagging       spiffe://cluster.local/ns/shop/sa/web (web-1)
CA replicas   2 reporting
Last message  waiting for 1 proxy
Took          Add 12s
Took          SwitchIssuer 3s
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}

	o.Output = "json"
	out.Reset()
	if err := anchor.Run(context.Background(), o, anchor.Status, &out); err != nil {
		t.Fatal(err)
	}
	var got rotator.Status
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.State.Stage != rotator.Reissue || got.Total != 3 || len(got.Fleet.Replicas) != 2 {
		t.Fatalf("JSON status %+v (%v):\n%s", got, err, out.String())
	}
}

// TestStatusNoNamespace: status in a namespace that does not exist says
// so and fails, rather than "no rotation has been started".
func TestStatusNoNamespace(t *testing.T) {
	for _, format := range []string{"table", "json"} {
		o, _ := setup(fake.NewClientset(), nil)
		o.Namespace, o.Output = "nosuch", format
		var out bytes.Buffer
		err := anchor.Run(context.Background(), o, anchor.Status, &out)
		if err == nil || err.Error() != "namespace nosuch does not exist: pass -n the namespace meshid is installed in" || out.Len() != 0 {
			t.Fatalf("-o %s: Run = %v, printed %q", format, err, out.String())
		}
	}
}

// TestStatusOfTheCluster runs status with rotation/anchor's own Rotator
// on a fake cluster: none started, then one that is done.
func TestStatusOfTheCluster(t *testing.T) {
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshid"}})
	o, _ := setup(client, nil)
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Status, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "no rotation has been started\n" {
		t.Fatalf("got %q", out.String())
	}

	state, err := json.Marshal(rotator.State{Stage: rotator.Done, Started: now.Add(-time.Hour), Timings: map[rotator.Stage]string{rotator.Remove: "4s"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ConfigMaps("meshid").Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshid", Name: rotator.StateConfigMap}, Data: map[string]string{rotator.StateKey: string(state)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := anchor.Run(context.Background(), o, anchor.Status, &out); err != nil {
		t.Fatal(err)
	}
	got := regexp.MustCompile(`  +`).ReplaceAllString(out.String(), " ")
	for _, want := range []string{"Stage Done\n", "Started 2030-06-01T11:00:00Z (1h0m0s ago)\n", "CA replicas 0 reporting\n", "Took Remove 4s\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

func TestValidateStart(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*anchor.Options)
		message string // empty: valid
	}{
		{name: "files", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey = "a", "k" }},
		{name: "generate", mod: func(o *anchor.Options) { o.Generate, o.WriteAnchorKey = true, "k" }},
		{name: "generate for cert-manager", mod: func(o *anchor.Options) { o.Generate, o.CertManager = true, true }},
		{name: "emergency, forced", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey, o.Emergency, o.Force = "a", "k", true, true }},
		{name: "neither", mod: func(*anchor.Options) {}, message: "start needs a new anchor: give --new-anchor-cert and --new-anchor-key, or --generate to make one"},
		{name: "both", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey, o.Generate = "a", "k", true }, message: "or --generate, not both"},
		{name: "key alone with generate", mod: func(o *anchor.Options) { o.Generate, o.NewAnchorKey, o.WriteAnchorKey = true, "k", "w" }, message: "--new-anchor-cert and --new-anchor-key go together"},
		{name: "cert without key", mod: func(o *anchor.Options) { o.NewAnchorCert = "a" }, message: "--new-anchor-cert and --new-anchor-key go together"},
		{name: "write key without generate", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey, o.WriteAnchorKey = "a", "k", "w" }, message: "--write-anchor-key only applies with --generate"},
		{name: "generate without keeping the key", mod: func(o *anchor.Options) { o.Generate = true }, message: "--generate needs --write-anchor-key FILE"},
		{name: "force without emergency", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey, o.Force = "a", "k", true }, message: "--force only applies with --emergency"},
		{name: "no reissue window", mod: func(o *anchor.Options) { o.NewAnchorCert, o.NewAnchorKey, o.ReissueWindow = "a", "k", 0 }, message: "--reissue-window must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := setup(nil, nil)
			tt.mod(o)
			clitest.WantUsage(t, "ValidateStart", o.ValidateStart(), tt.message)
		})
	}
}

func TestPlanJSON(t *testing.T) {
	o, _ := setup(fake.NewClientset(), &fakeRotator{})
	o.Output = "json"
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Plan, &out); err != nil {
		t.Fatal(err)
	}
	var steps []anchor.Step
	if err := json.Unmarshal(out.Bytes(), &steps); err != nil || len(steps) != len(rotator.Stages) {
		t.Fatalf("plan -o json: %v\n%s", err, out.String())
	}
	for i, s := range steps {
		if s.Stage != rotator.Stages[i] || s.Does == "" || s.AdvancesWhen == "" {
			t.Errorf("step %d: %+v", i, s)
		}
	}
}

// TestStartJSON: start -o json prints one JSON object a line: the
// progress events (the generated anchor's too), then a summary.
func TestStartJSON(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			f := &fakeRotator{events: []string{"rotation started", "stage Add: converged"}, status: &rotator.Status{State: &rotator.State{
				Stage: rotator.Done, Started: now, Timings: map[rotator.Stage]string{rotator.Add: "2s"}}}}
			if fail {
				f.err = errors.New("anchor: stage Add did not converge")
			}
			o, _ := setup(fake.NewClientset(), f)
			o.Output, o.Generate, o.WriteAnchorKey = "json", true, filepath.Join(t.TempDir(), "a.key")
			var out bytes.Buffer
			err := anchor.Run(context.Background(), o, anchor.Start, &out)
			if fail != (err != nil) {
				t.Fatalf("Run = %v", err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != 5 {
				t.Fatalf("%d lines, want 2 about the anchor, 2 events and a summary:\n%s", len(lines), out.String())
			}
			for i, l := range lines[:4] {
				var e struct {
					Type    string
					Time    time.Time
					Message string
				}
				if err := json.Unmarshal([]byte(l), &e); err != nil || e.Type != "progress" || e.Message == "" || e.Time.IsZero() {
					t.Fatalf("line %d %q (%v), want a progress event", i, l, err)
				}
			}
			var sum anchor.Summary
			if err := json.Unmarshal([]byte(lines[4]), &sum); err != nil || sum.Type != "summary" || sum.Stage != rotator.Done || sum.Timings[rotator.Add] != "2s" {
				t.Fatalf("summary %q (%v)", lines[4], err)
			}
			if fail != (sum.Error == "stage Add did not converge") {
				t.Fatalf("summary error %q, want the run's error without the package prefix", sum.Error)
			}
		})
	}
}

// TestStartRefusesBeforeGenerating: a key file that exists, or a start the
// Rotator refuses (an emergency on healthy material, another rotation),
// stops start before an anchor is generated: nothing printed, no key file
// written, no start.
func TestStartRefusesBeforeGenerating(t *testing.T) {
	dir := t.TempDir()
	existing := pkitest.File(t, dir, "old.key", []byte("last rotation's key"))
	tests := []struct {
		name     string
		keyFile  string
		checkErr error
		calls    int
		message  string
	}{
		{name: "key file exists", keyFile: existing, message: "--write-anchor-key " + existing + ": already exists"},
		{name: "directory missing", keyFile: filepath.Join(dir, "no", "a.key"), message: "does not exist; create it first"},
		{name: "rotator refuses", keyFile: filepath.Join(dir, "new.key"), checkErr: errors.New("anchor: the anchor and issuer in use are healthy"), calls: 1, message: "are healthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeRotator{checkErr: tt.checkErr}
			o, _ := setup(fake.NewClientset(), f)
			o.Generate, o.WriteAnchorKey, o.Emergency = true, tt.keyFile, true
			var out bytes.Buffer
			err := anchor.Run(context.Background(), o, anchor.Start, &out)
			if err == nil || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("Run = %v, want %q", err, tt.message)
			}
			if len(f.calls) != tt.calls || out.Len() != 0 {
				t.Fatalf("Rotator calls %q, printed %q", f.calls, out.String())
			}
			if got, _ := os.ReadFile(existing); string(got) != "last rotation's key" {
				t.Fatalf("the existing key file holds %q", got)
			}
			if tt.keyFile != existing {
				if _, err := os.Stat(tt.keyFile); err == nil {
					t.Fatal("wrote a key file for a refused start")
				}
			}
		})
	}
}

// TestStatusStuck: a stuck rotation is shown as such and exits 1, as a
// table and as JSON.
func TestStatusStuck(t *testing.T) {
	st := &rotator.Status{State: &rotator.State{Stage: rotator.Add, Started: now.Add(-time.Hour)}, Stuck: "the last run failed at 2030-06-01T11:30:00Z (timeout): stage Add did not converge"}
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			o, _ := setup(fake.NewClientset(), &fakeRotator{status: st})
			o.Output = format
			var out, stderr bytes.Buffer
			err := anchor.Run(context.Background(), o, anchor.Status, &out)
			if code := cli.Code(&stderr, err); code != cli.ExitProblem || stderr.Len() != 0 {
				t.Fatalf("exit %d, stderr %q; want 1 with the report alone", code, stderr.String())
			}
			if format == "json" {
				var got rotator.Status
				if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Stuck != st.Stuck {
					t.Fatalf("JSON %s (%v)", out.String(), err)
				}
				return
			}
			if !strings.Contains(regexp.MustCompile(`  +`).ReplaceAllString(out.String(), " "), "Stuck "+st.Stuck+": fix what holds it and run resume, or abort") {
				t.Fatalf("status:\n%s", out.String())
			}
		})
	}
	o, _ := setup(fake.NewClientset(), &fakeRotator{status: &rotator.Status{State: &rotator.State{Stage: rotator.Add}}})
	if err := anchor.Run(context.Background(), o, anchor.Status, &bytes.Buffer{}); err != nil {
		t.Fatalf("a rotation that is not stuck: %v", err)
	}
}

// TestAbortForce: abort --force asks the Rotator to remove the state, and
// prints what is left: the bundle, the issuer, the saved keys.
func TestAbortForce(t *testing.T) {
	left := &rotator.Leftovers{
		StateRemoved: true, Removed: rotator.Reissue, KeysSecret: "meshid/meshid-rotation", Keys: []string{"new-anchor.key", "old-issuer.crt", "old-issuer.key"},
		Bundle: rotator.BundleLeft{ConfigMap: "meshid/meshid-trust-bundle", SHA256: "0123456789abcdef", ReissueWindow: "30s", Anchors: []rotator.AnchorLeft{
			{Subject: "CN=old", SHA256: "aaaaaaaaaaaaaaaa", Role: "old", NotAfter: now.Add(time.Hour)},
			{Subject: "CN=new", SHA256: "bbbbbbbbbbbbbbbb", Role: "new", NotAfter: now.Add(time.Hour)},
		}},
		Issuer: rotator.IssuerLeft{Secret: "meshid/meshid-issuer", Subject: "CN=meshid issuer", SHA256: "cccccccccccccccc", NotAfter: now.Add(time.Hour), ChainsTo: "new anchor bbbbbbbbbbbb"},
	}
	f := &fakeRotator{left: left}
	o, _ := setup(fake.NewClientset(), f)
	o.AbortForce = true
	var out bytes.Buffer
	if err := anchor.Run(context.Background(), o, anchor.Abort, &out); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 || f.calls[0] != "force-abort" {
		t.Fatalf("Rotator calls %q, want force-abort alone", f.calls)
	}
	got := regexp.MustCompile(`  +`).ReplaceAllString(out.String(), " ")
	for _, want := range []string{
		"Removed the state of the rotation at stage Reissue (ConfigMap meshid/meshid-rotation). Nothing else was changed",
		"Bundle meshid/meshid-trust-bundle: 2 anchor(s), SHA-256 0123456789ab\n",
		" old anchor CN=old aaaaaaaaaaaa, valid until 2030-06-01T13:00:00Z\n",
		" new anchor CN=new bbbbbbbbbbbb",
		" re-issue window 30s still set",
		"Issuer meshid/meshid-issuer: CN=meshid issuer cccccccccccc, valid until 2030-06-01T13:00:00Z, chains to new anchor bbbbbbbbbbbb\n",
		"Saved keys Secret meshid/meshid-rotation, kept: new-anchor.key, old-issuer.crt, old-issuer.key\n",
		"kubectl -n meshid delete secret meshid-rotation",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	o.Output = "json"
	out.Reset()
	if err := anchor.Run(context.Background(), o, anchor.Abort, &out); err != nil {
		t.Fatal(err)
	}
	var back rotator.Leftovers
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Removed != rotator.Reissue || len(back.Keys) != 3 || back.Issuer.ChainsTo != left.Issuer.ChainsTo {
		t.Fatalf("JSON %s (%v)", out.String(), err)
	}
}
