package ca_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/external"
)

// workloads is an ExternalStore in memory, with resourceVersions as the
// API server keeps them; conflict, when set, makes the next UpdateStatus
// fail as if the object had changed.
type workloads struct {
	mu       sync.Mutex
	objs     map[string]*v1alpha1.ExternalWorkload
	rv       int
	conflict bool
}

func (w *workloads) put(o *v1alpha1.ExternalWorkload) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rv++
	o.ResourceVersion = fmt.Sprint(w.rv)
	w.objs[o.Namespace+"/"+o.Name] = o.DeepCopy()
}

func (w *workloads) Get(_ context.Context, ns, name string) (*v1alpha1.ExternalWorkload, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	o, ok := w.objs[ns+"/"+name]
	if !ok {
		return nil, nil
	}
	return o.DeepCopy(), nil
}

func (w *workloads) UpdateStatus(_ context.Context, o *v1alpha1.ExternalWorkload) (*v1alpha1.ExternalWorkload, error) {
	w.mu.Lock()
	cur, ok := w.objs[o.Namespace+"/"+o.Name]
	conflict := w.conflict
	w.conflict = false
	w.mu.Unlock()
	if !ok || conflict || cur.ResourceVersion != o.ResourceVersion {
		return nil, external.ErrChanged
	}
	w.put(o)
	return o, nil
}

func (w *workloads) obj(ns, name string) *v1alpha1.ExternalWorkload {
	o, _ := w.Get(context.Background(), ns, name)
	return o
}

type joiner struct {
	*reporter
	objs *workloads
}

// newJoiner is a server for ExternalWorkloads shop/vm (service account
// web) and shop/other (db), each with a pending join token.
func newJoiner(t *testing.T) (*joiner, map[string]string) {
	t.Helper()
	r := &reporter{fixture: newFixture(t, 48*time.Hour), log: &syncBuffer{}}
	r.load(t)
	r.metrics = ca.NewMetrics(r.store)
	j := &joiner{reporter: r, objs: &workloads{objs: map[string]*v1alpha1.ExternalWorkload{}}}
	toks := map[string]string{}
	for name, sa := range map[string]string{"vm": "web", "other": "db"} {
		tok, join, err := external.NewToken(r.now.Add(10 * time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		toks[name] = tok
		j.objs.put(&v1alpha1.ExternalWorkload{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec:       v1alpha1.ExternalWorkloadSpec{ServiceAccount: sa},
			Status:     v1alpha1.ExternalWorkloadStatus{Join: join},
		})
	}
	var err error
	r.server, err = ca.NewServer(ca.ServerConfig{
		TrustDomain: td, Authenticator: tokens{"web": "shop/web"}, Trust: r.store,
		Metrics: r.metrics, Clock: r.clock, Log: slog.New(slog.NewTextHandler(r.log, nil)),
		External: j.objs, ExternalLeafTTL: 20 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return j, toks
}

func (j *joiner) join(t *testing.T, name, token string) (*identityv1.CertifyResponse, error) {
	t.Helper()
	return j.server.JoinExternal(context.Background(), &identityv1.JoinExternalRequest{Namespace: "shop", Name: name, Token: token, Csr: csr(t)})
}

// holding is a context in which the caller presents resp's certificate,
// as after a TLS handshake with a client certificate.
func holding(t testing.TB, resp *identityv1.CertifyResponse) context.Context {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}},
	})
}

func serialOf(t *testing.T, resp *identityv1.CertifyResponse) string {
	t.Helper()
	c, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

func wantRefused(t *testing.T, err error, code codes.Code, reason string, m *ca.Metrics, method string) {
	t.Helper()
	if status.Code(err) != code || ca.ReasonOf(err) != reason {
		t.Fatalf("got %v (reason %q); want %s, reason %s", err, ca.ReasonOf(err), code, reason)
	}
	if got := counterWith(t, m, "meshid_ca_external_refused_total", method, reason); got < 1 {
		t.Fatalf("meshid_ca_external_refused_total{method=%q,reason=%q} = %v", method, reason, got)
	}
}

// counterWith reads the series of name with labels method and reason.
func counterWith(t *testing.T, m *ca.Metrics, name, method, reason string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["method"] == method && (reason == "" || got["reason"] == reason) {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestJoinExternal(t *testing.T) {
	j, toks := newJoiner(t)
	resp, err := j.join(t, "vm", toks["vm"])
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(resp.GetLeaf())
	if want := "spiffe://cluster.local/ns/shop/sa/web"; resp.GetSpiffeId() != want || len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("issued %s; want the service account's identity %s", resp.GetSpiffeId(), want)
	}
	if got := leaf.NotAfter.Sub(j.now); got != 20*time.Minute {
		t.Fatalf("lifetime %s; want the external TTL 20m", got)
	}
	st := j.objs.obj("shop", "vm").Status
	if st.Join != nil || st.Serial != leaf.SerialNumber.Text(16) || !st.NotAfter.Time.Equal(leaf.NotAfter) || st.LastSeen == nil || st.JoinedAt == nil {
		t.Fatalf("status %+v; want the token used up, the serial %s and expiry recorded", st, leaf.SerialNumber.Text(16))
	}
	if counterWith(t, j.metrics, "meshid_ca_external_certificates_issued_total", "join", "") != 1 {
		t.Fatal("join not counted")
	}
	if strings.Contains(j.log.String(), toks["vm"]) {
		t.Fatal("the log holds the join token")
	}

	t.Run("the token a second time", func(t *testing.T) {
		_, err := j.join(t, "vm", toks["vm"])
		wantRefused(t, err, codes.PermissionDenied, string(external.TokenInvalid), j.metrics, "join")
	})
	t.Run("another workload's token", func(t *testing.T) {
		_, err := j.join(t, "other", toks["vm"])
		wantRefused(t, err, codes.PermissionDenied, string(external.TokenInvalid), j.metrics, "join")
		if j.objs.obj("shop", "other").Status.Join == nil {
			t.Fatal("a wrong token used up the right one")
		}
	})
	t.Run("no such workload", func(t *testing.T) {
		_, err := j.join(t, "ghost", toks["other"])
		wantRefused(t, err, codes.PermissionDenied, string(external.TokenInvalid), j.metrics, "join")
		if !strings.Contains(status.Convert(err).Message(), "unknown, already used, or for another workload") {
			t.Fatalf("message %q", status.Convert(err).Message())
		}
	})
	t.Run("after its TTL", func(t *testing.T) {
		j.clock.SetTime(j.now.Add(10 * time.Minute))
		defer j.clock.SetTime(j.now)
		_, err := j.join(t, "other", toks["other"])
		wantRefused(t, err, codes.PermissionDenied, string(external.TokenExpired), j.metrics, "join")
	})
	t.Run("changed while signing", func(t *testing.T) {
		j.objs.conflict = true
		_, err := j.join(t, "other", toks["other"])
		wantRefused(t, err, codes.Aborted, string(external.Changed), j.metrics, "join")
		if st := j.objs.obj("shop", "other").Status; st.Serial != "" || st.Join == nil {
			t.Fatalf("status changed by a refused join: %+v", st)
		}
	})
	t.Run("not a name", func(t *testing.T) {
		_, err := j.server.JoinExternal(context.Background(), &identityv1.JoinExternalRequest{Namespace: "shop", Name: "Not/A/Name", Token: "x", Csr: csr(t)})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v; want INVALID_ARGUMENT", err)
		}
	})
}

func TestRenewExternal(t *testing.T) {
	j, toks := newJoiner(t)
	first, err := j.join(t, "vm", toks["vm"])
	if err != nil {
		t.Fatal(err)
	}
	renew := func(resp *identityv1.CertifyResponse, name string) (*identityv1.CertifyResponse, error) {
		return j.server.RenewExternal(holding(t, resp), &identityv1.RenewExternalRequest{Name: name, Csr: csr(t)})
	}
	second, err := renew(first, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if got := j.objs.obj("shop", "vm").Status.Serial; got != serialOf(t, second) || got == serialOf(t, first) {
		t.Fatalf("status serial %s; want the renewed certificate's %s", got, serialOf(t, second))
	}

	t.Run("with the replaced certificate", func(t *testing.T) {
		_, err := renew(first, "vm")
		wantRefused(t, err, codes.PermissionDenied, string(external.NotIssued), j.metrics, "renew")
	})
	t.Run("with a pod's certificate of the same service account", func(t *testing.T) {
		pod, err := j.server.Certify(context.Background(), &identityv1.CertifyRequest{Csr: csr(t), Token: "web"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = renew(pod, "vm")
		wantRefused(t, err, codes.PermissionDenied, string(external.NotIssued), j.metrics, "renew")
	})
	t.Run("for another workload", func(t *testing.T) {
		_, err := renew(second, "other")
		wantRefused(t, err, codes.PermissionDenied, string(external.AccountMismatch), j.metrics, "renew")
	})
	t.Run("without a client certificate", func(t *testing.T) {
		_, err := j.server.RenewExternal(context.Background(), &identityv1.RenewExternalRequest{Name: "vm", Csr: csr(t)})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("got %v; want UNAUTHENTICATED", err)
		}
	})
	t.Run("after revoke", func(t *testing.T) {
		w := j.objs.obj("shop", "vm")
		left := external.Revoke(w, j.now)
		j.objs.put(w)
		if left != 20*time.Minute {
			t.Fatalf("remaining %s; want 20m", left)
		}
		_, err := renew(second, "vm")
		wantRefused(t, err, codes.PermissionDenied, string(external.NotIssued), j.metrics, "renew")
	})
	t.Run("after delete", func(t *testing.T) {
		third, err := j.join(t, "other", toks["other"])
		if err != nil {
			t.Fatal(err)
		}
		j.objs.mu.Lock()
		delete(j.objs.objs, "shop/other")
		j.objs.mu.Unlock()
		_, err = renew(third, "other")
		wantRefused(t, err, codes.PermissionDenied, string(external.Gone), j.metrics, "renew")
	})
}

func TestExternalOff(t *testing.T) {
	f := newFixture(t, 48*time.Hour)
	f.load(t)
	_, err := f.server.JoinExternal(context.Background(), &identityv1.JoinExternalRequest{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "--external-workloads") {
		t.Fatalf("got %v; want UNIMPLEMENTED naming --external-workloads", err)
	}
}
