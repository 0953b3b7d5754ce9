package e2e_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
)

// TestCertify: tokens from TokenRequest for two service accounts get
// certificates with the right SPIFFE IDs that chain to the anchor, checked
// with go-spiffe and with openssl.
func TestCertify(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	// A normal start is not an incident: no Warning Events.
	evs, err := need(t).client.CoreV1().Events(ca.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil || len(evs.Items) > 0 {
		t.Fatalf("Warning Events after a normal start: %v %v", evs.Items, err)
	}
	ns := namespace(t, "shop")
	for _, sa := range []string{"web", "db"} {
		t.Run(sa, func(t *testing.T) {
			serviceAccount(t, ns, sa)
			tok := token(t, ns, sa, audience, nil)
			got, err := rotation.Certify(context.Background(), ca.client, tok, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			want := "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
			if got.SVID.ID.String() != want {
				t.Fatalf("SPIFFE ID %s, want %s", got.SVID.ID, want)
			}
			// go-spiffe's own verifier, against the anchor.
			id, chains, err := x509svid.Verify(got.SVID.Certificates, ca.bundle.X509Bundle(trustDomain))
			if err != nil || id != got.SVID.ID {
				t.Fatalf("x509svid.Verify = %s, %v", id, err)
			}
			if top := chains[0][len(chains[0])-1]; !top.Equal(ca.anchor.Cert) {
				t.Fatalf("chain ends at %s, want the anchor", top.Subject)
			}
			leaf := got.SVID.Certificates[0]
			checkLeaf(t, leaf, ca)
			if !got.RenewAfter.After(leaf.NotBefore) || !got.RenewAfter.Before(leaf.NotAfter) {
				t.Fatalf("renew_after %s is outside the leaf's validity", got.RenewAfter)
			}
			opensslVerify(t, got.SVID, ca)
			// The audit line names the identity and serial, never the token.
			eventually(t, 5*time.Second, func() error {
				logs := ca.logs(t)
				if !strings.Contains(logs, `"certificate issued"`) || !strings.Contains(logs, leaf.SerialNumber.Text(16)) {
					return fmt.Errorf("no audit line for serial %s", leaf.SerialNumber.Text(16))
				}
				return nil
			})
			if strings.Contains(ca.logs(t), tok) {
				t.Fatal("the CA logged a token")
			}
		})
	}
}

func checkLeaf(t *testing.T, leaf *x509.Certificate, ca *caProcess) {
	t.Helper()
	switch {
	case leaf.IsCA:
		t.Error("leaf is a CA")
	case len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0:
		t.Errorf("leaf SANs: URIs %v DNS %v IP %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage %v", leaf.KeyUsage)
	case len(leaf.ExtKeyUsage) != 2:
		t.Errorf("ext key usage %v, want server and client auth", leaf.ExtKeyUsage)
	case len(leaf.SubjectKeyId) != 20 || len(leaf.AuthorityKeyId) == 0:
		t.Errorf("key identifiers: subject %x, authority %x", leaf.SubjectKeyId, leaf.AuthorityKeyId)
	case leaf.SerialNumber.BitLen() < 64:
		t.Errorf("serial %s is not random enough", leaf.SerialNumber)
	case !leaf.NotBefore.Before(time.Now().Add(-time.Minute)):
		t.Errorf("NotBefore %s is not backdated", leaf.NotBefore)
	case time.Until(leaf.NotAfter) > 24*time.Hour+time.Minute || time.Until(leaf.NotAfter) < 23*time.Hour:
		t.Errorf("NotAfter %s is not about 24 h away", leaf.NotAfter)
	case leaf.NotAfter.After(ca.issuer.Cert.NotAfter):
		t.Error("leaf outlives its issuer")
	}
}

// opensslVerify checks the chain with `openssl verify`.
func opensslVerify(t *testing.T, svid *x509svid.SVID, ca *caProcess) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var buf bytes.Buffer
		for _, c := range certs {
			_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	anchors := write("anchors.pem", ca.anchor.Cert)
	chain := write("chain.pem", svid.Certificates[1:]...)
	leaf := write("leaf.pem", svid.Certificates[0])
	out, err := exec.Command("openssl", "verify", "-CAfile", anchors, "-untrusted", chain, "-purpose", "sslclient", leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// And the same leaf against a different anchor must fail.
	other := write("other.pem", newAnchor(t, "stranger").Cert)
	if out, err := exec.Command("openssl", "verify", "-CAfile", other, "-untrusted", chain, leaf).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified the leaf against an unrelated anchor:\n%s", out)
	}
}

// TestCertifyRefusals: each way of asking for what the token does not prove
// is refused with the right code, and counted by reason.
func TestCertifyRefusals(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	ctx := context.Background()
	ns := namespace(t, "refuse")
	serviceAccount(t, ns, "a")
	serviceAccount(t, ns, "b")
	serviceAccount(t, ns, "gone")
	goneToken := token(t, ns, "gone", audience, nil)
	if err := need(t).client.CoreV1().ServiceAccounts(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p := pod(t, ns, "a-0", "a")
	podToken := token(t, ns, "a", audience, p)
	if err := need(t).client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	// The pod has no node, so it is removed at once; wait until it is gone.
	eventually(t, 10*time.Second, func() error {
		if _, err := need(t).client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s still exists", p.Name)
		}
		return nil
	})

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrFor := func(uris ...string) []byte {
		var u []*url.URL
		for _, s := range uris {
			parsed, _ := url.Parse(s)
			u = append(u, parsed)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: u}, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	aID := "spiffe://cluster.local/ns/" + ns + "/sa/a"
	bID := "spiffe://cluster.local/ns/" + ns + "/sa/b"

	tests := []struct {
		name   string
		token  string
		csr    []byte
		code   codes.Code
		reason string
	}{
		{name: "wrong audience", token: token(t, ns, "a", "https://kubernetes.default.svc.cluster.local", nil), csr: csrFor(), code: codes.Unauthenticated, reason: "token_rejected"},
		{name: "garbage token", token: "garbage", csr: csrFor(), code: codes.Unauthenticated, reason: "token_rejected"},
		{name: "no token", token: "", csr: csrFor(), code: codes.Unauthenticated, reason: "token_missing"},
		{name: "csr names another service account", token: token(t, ns, "a", audience, nil), csr: csrFor(bID), code: codes.PermissionDenied, reason: "csr_name_mismatch"},
		{name: "csr names another trust domain", token: token(t, ns, "a", audience, nil), csr: csrFor("spiffe://evil.example/ns/" + ns + "/sa/a"), code: codes.PermissionDenied, reason: "csr_name_mismatch"},
		{name: "csr names own id and another", token: token(t, ns, "a", audience, nil), csr: csrFor(aID, bID), code: codes.PermissionDenied, reason: "csr_name_mismatch"},
		{name: "deleted service account", token: goneToken, csr: csrFor(), code: codes.Unauthenticated, reason: "token_rejected"},
		{name: "deleted pod", token: podToken, csr: csrFor(), code: codes.Unauthenticated, reason: "token_rejected"},
		{name: "malformed csr", token: token(t, ns, "a", audience, nil), csr: []byte("not a csr"), code: codes.InvalidArgument, reason: "csr_malformed"},
		{name: "oversized csr", token: token(t, ns, "a", audience, nil), csr: make([]byte, 9<<10), code: codes.InvalidArgument, reason: "csr_malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			series := `meshid_ca_certificates_refused_total{reason="` + tt.reason + `"}`
			before := ca.metric(t, series)
			_, err := ca.client.Certify(ctx, &identityv1.CertifyRequest{Csr: tt.csr, Token: tt.token})
			if status.Code(err) != tt.code {
				t.Fatalf("code %s (%v), want %s", status.Code(err), err, tt.code)
			}
			if msg := status.Convert(err).Message(); len(msg) < 20 {
				t.Errorf("message %q does not say what was wrong", msg)
			}
			if after := ca.metric(t, series); after != before+1 {
				t.Errorf("%s went from %v to %v, want +1", series, before, after)
			}
		})
	}
	// The same token of a live pod works: the refusal above was the deletion.
	live := pod(t, ns, "a-1", "a")
	if _, err := rotation.Certify(ctx, ca.client, token(t, ns, "a", audience, live), time.Now()); err != nil {
		t.Fatalf("a token bound to a live pod was refused: %v", err)
	}
}
