package workload_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/workload"
)

var now = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// cluster is a fake cluster holding ExternalWorkloads, and the options
// that reach it.
func cluster(t *testing.T, ws ...*v1alpha1.ExternalWorkload) (*external.Store, *workload.Options) {
	t.Helper()
	scheme := runtime.NewScheme() // unstructured only, as from the API server
	var objs []runtime.Object
	for _, w := range ws {
		u, err := external.ToUnstructured(w)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, u)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{v1alpha1.Resource: "ExternalWorkloadList"}, objs...)
	o := &workload.Options{
		Namespace: "shop", TTL: 10 * time.Minute, TrustDomain: "cluster.local", ControlPlane: "meshid", CA: "ca.example:8443",
		TokenFile: "/etc/meshid/join-token", BundleFile: "/etc/meshid/ca-bundle.crt", StateDir: "/var/lib/meshid-proxy", Binary: "/usr/local/bin/meshid-proxy",
		Output: "json", Clock: clocktesting.NewFakePassiveClock(now),
		Connect: func(kube.Target, string) (*kube.Clients, error) { return &kube.Clients{Dynamic: dyn}, nil },
	}
	return external.NewStore(dyn), o
}

func vm(name string) *v1alpha1.ExternalWorkload {
	return &v1alpha1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec:       v1alpha1.ExternalWorkloadSpec{ServiceAccount: "db"},
	}
}

func TestJoin(t *testing.T) {
	store, o := cluster(t, vm("pg-1"))
	o.Name = "pg-1"
	var out bytes.Buffer
	if err := workload.Join(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	var j workload.Joined
	if err := json.Unmarshal(out.Bytes(), &j); err != nil {
		t.Fatal(err)
	}
	w, _ := store.Get(context.Background(), "shop", "pg-1")
	if w.Status.Join == nil || w.Status.Join.SHA256 != external.Hash(j.Token) || !w.Status.Join.Expires.Time.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("status %+v; want the hash of %q expiring in 10m", w.Status.Join, j.Token)
	}
	if strings.Contains(w.Status.Join.SHA256, j.Token) || !strings.HasPrefix(j.Token, "meshid-join-") || len(j.Token) < 40 {
		t.Fatalf("token %q", j.Token)
	}
	want := "/usr/local/bin/meshid-proxy --external-workload shop/pg-1 --join-token-file /etc/meshid/join-token --state-dir /var/lib/meshid-proxy --trust-bundle-file /etc/meshid/ca-bundle.crt --ca ca.example:8443 --ca-id spiffe://cluster.local/ns/meshid/sa/meshid-ca --trust-domain cluster.local"
	if got := strings.Join(j.Command, " "); got != want || j.SPIFFEID != "spiffe://cluster.local/ns/shop/sa/db" {
		t.Fatalf("command %q (%s)\nwant    %q", got, j.SPIFFEID, want)
	}

	t.Run("a second join replaces the token", func(t *testing.T) {
		out.Reset()
		if err := workload.Join(context.Background(), o, &out); err != nil {
			t.Fatal(err)
		}
		var j2 workload.Joined
		_ = json.Unmarshal(out.Bytes(), &j2)
		w, _ := store.Get(context.Background(), "shop", "pg-1")
		if j2.Token == j.Token || w.Status.Join.SHA256 != external.Hash(j2.Token) {
			t.Fatal("the pending token was not replaced")
		}
	})
	t.Run("text and systemd", func(t *testing.T) {
		o := *o
		o.Output, o.Systemd = "text", true
		out.Reset()
		if err := workload.Join(context.Background(), &o, &out); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"accepted once, until 2030-01-01T12:10:00Z (10m0s from now)", "ExecStart=/usr/local/bin/meshid-proxy --external-workload shop/pg-1", "StateDirectory=meshid-proxy", "meshid workload revoke pg-1 -n shop"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("no such workload", func(t *testing.T) {
		o := *o
		o.Name = "ghost"
		if err := workload.Join(context.Background(), &o, &out); err == nil || !strings.Contains(err.Error(), "there is no ExternalWorkload shop/ghost: create it first") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestRevokeAndList(t *testing.T) {
	active := vm("pg-1")
	active.Status = v1alpha1.ExternalWorkloadStatus{Serial: "abc", NotAfter: &metav1.Time{Time: now.Add(41 * time.Minute)}, LastSeen: &metav1.Time{Time: now.Add(-time.Minute)}}
	pending := vm("pg-2")
	pending.Status.Join = &v1alpha1.JoinToken{SHA256: strings.Repeat("0", 64), Expires: metav1.Time{Time: now.Add(time.Minute)}}
	expired := vm("pg-3")
	expired.Status = v1alpha1.ExternalWorkloadStatus{Serial: "def", NotAfter: &metav1.Time{Time: now.Add(-time.Minute)}}
	store, o := cluster(t, active, pending, expired, vm("pg-4"))

	list := func() map[string]string {
		var out bytes.Buffer
		if err := workload.List(context.Background(), o, &out); err != nil {
			t.Fatal(err)
		}
		var rows []workload.Row
		if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range rows {
			got[r.Name] = r.State
		}
		return got
	}
	want := map[string]string{"pg-1": workload.StateActive, "pg-2": workload.StatePending, "pg-3": workload.StateExpired, "pg-4": workload.StateUnjoined}
	if got := list(); !maps.Equal(got, want) {
		t.Fatalf("list %v; want %v", got, want)
	}

	o.Name, o.Output = "pg-1", "text"
	var out bytes.Buffer
	if err := workload.Revoke(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Its last certificate (serial abc) stays valid for 41m0s more, until 2030-01-01T12:41:00Z") {
		t.Fatalf("revoke printed:\n%s", out.String())
	}
	w, _ := store.Get(context.Background(), "shop", "pg-1")
	if w.Status.Serial != "" || w.Status.RevokedAt == nil {
		t.Fatalf("status after revoke %+v", w.Status)
	}
	o.Output = "json"
	want["pg-1"] = workload.StateRevoked
	if got := list(); !maps.Equal(got, want) {
		t.Fatalf("list after revoke %v; want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	_, o := cluster(t)
	o.TTL = 48 * time.Hour
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "at most 24h") {
		t.Fatalf("--ttl 48h: %v", err)
	}
}
