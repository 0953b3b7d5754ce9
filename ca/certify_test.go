package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/authn"
	csrcheck "github.com/meshid/meshid/ca/csr"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/issuer/issuertest"
)

// review is an Authenticator that answers every token the same.
type review struct {
	result authn.Result
	cached bool
	err    error
}

func (r review) Review(context.Context, string) (authn.Result, bool, error) {
	return r.result, r.cached, r.err
}

var web = func() authn.Result {
	sa := identity.ServiceAccount{Namespace: "shop", Name: "web"}
	id, _ := sa.ID(td)
	return authn.Result{ID: id, ServiceAccount: sa}
}()

// step is a Server whose Authenticator answers what a test says, with
// the metrics it counts on.
type step struct {
	*ca.Server
	metrics *ca.Metrics
}

// stepServer returns a step server whose Authenticator answers r, with
// store (nil: an empty one), logging JSON to log (nil: discarded).
func stepServer(t *testing.T, r review, store *trust.Store, log *bytes.Buffer) step {
	t.Helper()
	if store == nil {
		store = trust.NewStore(trust.Config{})
	}
	if log == nil {
		log = new(bytes.Buffer)
	}
	m := ca.NewMetrics(store)
	s, err := ca.NewServer(ca.ServerConfig{
		TrustDomain: td, Authenticator: r, Trust: store, Metrics: m,
		Reserved: []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/meshid/sa/meshid-ca")},
		Log:      slog.New(slog.NewJSONHandler(log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return step{Server: s, metrics: m}
}

// refused checks that err is a refusal with reason and code.
func refused(t *testing.T, err error, reason string, code codes.Code) {
	t.Helper()
	if got := ca.ReasonOf(err); got != reason || status.Code(err) != code {
		t.Fatalf("refusal %q (%s: %v), want %q (%s)", got, status.Code(err), err, reason, code)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		reason authn.Reason
		code   codes.Code
	}{
		{authn.Rejected, codes.Unauthenticated},
		{authn.Missing, codes.Unauthenticated},
		{authn.NotServiceAccount, codes.PermissionDenied},
		{authn.AudienceDropped, codes.Internal},
		{authn.Unavailable, codes.Unavailable},
		{authn.Canceled, codes.Canceled},
		{authn.Malformed, codes.InvalidArgument},
	} {
		t.Run(string(tt.reason), func(t *testing.T) {
			s := stepServer(t, review{err: &authn.Error{Reason: tt.reason, Detail: "what the caller reads", Internal: "what only the operator reads"}}, nil, nil)
			_, err := s.Authenticate(ctx, "tok")
			refused(t, err, string(tt.reason), tt.code)
			if msg := status.Convert(err).Message(); msg != "authn: what the caller reads" {
				t.Fatalf("the caller is told %q, want the Detail only", msg)
			}
			var ae *authn.Error
			if !errors.As(err, &ae) {
				t.Fatal("the refusal lost its *authn.Error, which the CA logs")
			}
		})
	}
	t.Run("review failed without a reason", func(t *testing.T) {
		s := stepServer(t, review{err: errors.New("secret detail")}, nil, nil)
		_, err := s.Authenticate(ctx, "tok")
		refused(t, err, "internal", codes.Internal)
		if strings.Contains(err.Error(), "secret detail") {
			t.Fatalf("the caller is told %q", err)
		}
	})
	t.Run("reserved identity", func(t *testing.T) {
		sa := identity.ServiceAccount{Namespace: "meshid", Name: "meshid-ca"}
		id, _ := sa.ID(td)
		s := stepServer(t, review{result: authn.Result{ID: id, ServiceAccount: sa}}, nil, nil)
		_, err := s.Authenticate(ctx, "tok")
		refused(t, err, "reserved_identity", codes.PermissionDenied)
	})
	t.Run("a cached review is counted", func(t *testing.T) {
		for _, cached := range []bool{false, true} {
			s := stepServer(t, review{result: web, cached: cached}, nil, nil)
			who, err := s.Authenticate(ctx, "tok")
			if err != nil || who.ID != web.ID {
				t.Fatalf("Authenticate = %v, %v", who.ID, err)
			}
			if got, want := metric(t, s, "meshid_ca_token_review_cache_hits_total"), map[bool]float64{true: 1}[cached]; got != want {
				t.Fatalf("cached=%v: %v cache hits, want %v", cached, got, want)
			}
		}
	})
}

// metric reads a counter of s's registry.
func metric(t *testing.T, s step, name string) float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestCheck(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	request := func(tmpl *x509.CertificateRequest) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	caTrue, _ := asn1.Marshal(struct{ IsCA bool }{true})
	other, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/db")

	if err := ca.CheckSize(make([]byte, csrcheck.MaxSize)); err != nil {
		t.Fatalf("CheckSize(MaxSize) = %v", err)
	}
	refused(t, ca.CheckSize(make([]byte, csrcheck.MaxSize+1)), string(csrcheck.Malformed), codes.InvalidArgument)

	pub, err := ca.Check(request(&x509.CertificateRequest{}), web.ID)
	if err != nil || !key.PublicKey.Equal(pub) {
		t.Fatalf("Check = %v, %v; want the request's key", pub, err)
	}
	for _, tt := range []struct {
		name   string
		der    []byte
		reason csrcheck.Reason
		code   codes.Code
	}{
		{"garbage", []byte("garbage"), csrcheck.Malformed, codes.InvalidArgument},
		{"ca", request(&x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caTrue}}}), csrcheck.CARequested, codes.PermissionDenied},
		{"another identity", request(&x509.CertificateRequest{URIs: []*url.URL{other}}), csrcheck.NameMismatch, codes.PermissionDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.Check(tt.der, web.ID)
			refused(t, err, string(tt.reason), tt.code)
		})
	}
}

func TestSign(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	load := func(t *testing.T, anchor, iss *issuer.KeyPair) *trust.Store {
		t.Helper()
		s := trust.NewStore(trust.Config{Clock: clocktesting.NewFakePassiveClock(now)})
		if _, err := s.SetBundle(anchor.CertPEM()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetIssuer(iss.CertPEM(), issuertest.KeyPEM(t, iss.Key)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	anchor := issuertest.Anchor(t, issuertest.NotBefore(now.Add(-time.Hour)))
	iss := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now.Add(-time.Hour)))

	t.Run("no issuer yet", func(t *testing.T) {
		_, err := stepServer(t, review{}, nil, nil).Sign(ctx, web.ID, key.Public(), now)
		refused(t, err, "no_issuer", codes.Unavailable)
	})
	t.Run("issuer expired", func(t *testing.T) {
		_, err := stepServer(t, review{}, load(t, anchor, iss), nil).Sign(ctx, web.ID, key.Public(), iss.Cert.NotAfter.Add(time.Second))
		refused(t, err, "issuer_invalid", codes.Unavailable)
	})
	t.Run("leaf", func(t *testing.T) {
		out, err := stepServer(t, review{}, load(t, anchor, iss), nil).Sign(ctx, web.ID, key.Public(), now)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := out.Certificate()
		if !leaf.NotBefore.Equal(now.Add(-ca.DefaultBackdate)) || !leaf.NotAfter.Equal(now.Add(ca.DefaultLeafTTL)) || leaf.URIs[0].String() != web.ID.String() {
			t.Fatalf("leaf for %s valid %s to %s; want %s backdated by %s, for %s", leaf.URIs, leaf.NotBefore, leaf.NotAfter, web.ID, ca.DefaultBackdate, ca.DefaultLeafTTL)
		}
	})
	t.Run("never outlives the anchor", func(t *testing.T) {
		// The anchor ends 3 h from now, before its issuer: the issuer's
		// own chain stops below the anchor, so the CA passes the cap.
		short := issuertest.Anchor(t, issuertest.NotBefore(now.Add(-time.Hour)), issuertest.TTL(4*time.Hour))
		long := issuertest.Intermediate(t, short, issuertest.NotBefore(now.Add(-time.Hour)))
		out, err := stepServer(t, review{}, load(t, short, long), nil).Sign(ctx, web.ID, key.Public(), now)
		if err != nil {
			t.Fatal(err)
		}
		if !out.NotAfter.Equal(short.Cert.NotAfter) {
			t.Fatalf("NotAfter %s, want the anchor's %s", out.NotAfter, short.Cert.NotAfter)
		}
	})
}

func TestAudit(t *testing.T) {
	anchor := issuertest.Anchor(t)
	iss := issuertest.Intermediate(t, anchor)
	leaf := issuertest.Leaf(t, iss, web.ID)
	out := &issuer.Issued{DER: leaf.Cert.Raw, Serial: leaf.Cert.SerialNumber, NotAfter: leaf.Cert.NotAfter, IssuerFingerprint: iss.Fingerprint()}
	renew := leaf.Cert.NotAfter.Add(-time.Minute)
	bound := web
	bound.Pod, bound.PodUID = "web-1", "uid-1"

	for _, tt := range []struct {
		name string
		who  authn.Result
		pod  string
	}{
		{name: "unbound token", who: web},
		{name: "token bound to a pod", who: bound, pod: "shop/web-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			stepServer(t, review{}, nil, &log).Audit(context.Background(), tt.who, out, renew)
			var line map[string]any
			if err := json.Unmarshal(log.Bytes(), &line); err != nil {
				t.Fatalf("one JSON line expected: %v: %s", err, log.String())
			}
			want := map[string]any{
				"msg": "certificate issued", "spiffe_id": web.ID.String(), "serial": leaf.Cert.SerialNumber.Text(16),
				"not_after": leaf.Cert.NotAfter.Format(time.RFC3339Nano), "renew_after": renew.Format(time.RFC3339Nano), "issuer": iss.Fingerprint(),
			}
			if tt.pod != "" {
				want["pod"], want["pod_uid"] = tt.pod, "uid-1"
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %v, want %v", k, line[k], v)
				}
			}
			if _, ok := line["pod"]; ok != (tt.pod != "") {
				t.Errorf("pod logged: %v, want %v", ok, tt.pod != "")
			}
		})
	}
}

func TestAnswer(t *testing.T) {
	anchor := issuertest.Anchor(t)
	mid := issuertest.Intermediate(t, anchor)
	iss := issuertest.Intermediate(t, mid)
	leaf := issuertest.Leaf(t, iss, web.ID)
	now := time.Now().Truncate(time.Second)
	out := &issuer.Issued{DER: leaf.Cert.Raw, Intermediates: iss.Certificates(), Serial: leaf.Cert.SerialNumber, NotAfter: leaf.Cert.NotAfter}
	resp := ca.Answer(web.ID, out, now, now.Add(time.Minute))
	switch {
	case !bytes.Equal(resp.GetLeaf(), leaf.Cert.Raw):
		t.Error("leaf is not the signed DER")
	case len(resp.GetIntermediates()) != 2 || !bytes.Equal(resp.GetIntermediates()[0], iss.Cert.Raw) || !bytes.Equal(resp.GetIntermediates()[1], mid.Cert.Raw):
		t.Error("intermediates are not the issuer then its chain")
	case !resp.GetValidUntil().AsTime().Equal(leaf.Cert.NotAfter):
		t.Errorf("valid_until %s, want the leaf's NotAfter", resp.GetValidUntil().AsTime())
	case !resp.GetRenewAfter().AsTime().Equal(now.Add(time.Minute)) || !resp.GetServerTime().AsTime().Equal(now):
		t.Error("renew_after or server_time is not what was passed")
	case resp.GetSpiffeId() != web.ID.String():
		t.Errorf("spiffe_id %q", resp.GetSpiffeId())
	}
}

// TestCertifyLogsNoSecrets: neither the token nor the CSR reaches the log,
// on success or refusal.
func TestCertifyLogsNoSecrets(t *testing.T) {
	now := time.Now()
	anchor := issuertest.Anchor(t, issuertest.NotBefore(now.Add(-time.Hour)))
	iss := issuertest.Intermediate(t, anchor, issuertest.NotBefore(now.Add(-time.Hour)))
	store := trust.NewStore(trust.Config{})
	if _, err := store.SetBundle(anchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetIssuer(iss.CertPEM(), issuertest.KeyPEM(t, iss.Key)); err != nil {
		t.Fatal(err)
	}
	const token = "eyJhbGciOiJSUzI1NiJ9.secret-token"
	der := csr(t)
	for _, r := range []review{{result: web}, {err: &authn.Error{Reason: authn.Rejected, Detail: "token rejected"}}} {
		var log bytes.Buffer
		s := stepServer(t, r, store, &log)
		_, _ = s.Certify(context.Background(), &identityv1.CertifyRequest{Csr: der, Token: token})
		if log.Len() == 0 {
			t.Fatal("nothing was logged")
		}
		if strings.Contains(log.String(), "secret-token") || strings.Contains(log.String(), base64.StdEncoding.EncodeToString(der)[:24]) {
			t.Fatalf("the log holds the token or the CSR: %s", log.String())
		}
	}
}
