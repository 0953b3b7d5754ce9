package e2e_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer/issuertest"
	"github.com/meshid/meshid/rotation"
)

// issuedBy certifies sa and returns the certificate that signed the leaf.
func issuedBy(t *testing.T, ca *caProcess, tok string) (*x509.Certificate, error) {
	t.Helper()
	got, err := rotation.Certify(context.Background(), ca.client, tok, time.Now())
	if err != nil {
		return nil, err
	}
	return got.SVID.Certificates[1], nil
}

func updateSecret(t *testing.T, ns string, data map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	s, err := need(t).client.CoreV1().Secrets(ns).Get(ctx, "meshid-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data = data
	if _, err := need(t).client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// warningEvent waits for a Warning Event with reason on the named object.
func warningEvent(t *testing.T, ns, name, reason string) *corev1.Event {
	t.Helper()
	var found *corev1.Event
	eventually(t, 10*time.Second, func() error {
		evs, err := need(t).client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i, ev := range evs.Items {
			if ev.InvolvedObject.Name == name && ev.Reason == reason && ev.Type == corev1.EventTypeWarning {
				found = &evs.Items[i]
				return nil
			}
		}
		return fmt.Errorf("no Warning Event %s on %s among %d events", reason, name, len(evs.Items))
	})
	return found
}

// TestIssuerHotReload: a new valid issuer in the Secret signs the next
// certificates without a restart; garbage, an expired issuer or one from an
// unknown anchor does not, and each refusal is an Event and a metric.
func TestIssuerHotReload(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	ns := namespace(t, "reload")
	serviceAccount(t, ns, "web")
	tok := token(t, ns, "web", audience, nil)

	first, err := issuedBy(t, ca, tok)
	if err != nil || !first.Equal(ca.issuer.Cert) {
		t.Fatalf("first certificate issued by %v (%v), want the initial issuer", first.Subject, err)
	}

	next := newIssuer(t, ca.anchor, "e2e issuer 2")
	updateSecret(t, ca.ns, issuerSecret(t, next).Data)
	eventually(t, 10*time.Second, func() error {
		got, err := issuedBy(t, ca, tok)
		if err != nil {
			return err
		}
		if !got.Equal(next.Cert) {
			return fmt.Errorf("still issued by %s", got.Subject)
		}
		return nil
	})

	expired := issuertest.Intermediate(t, ca.anchor, issuertest.Name("expired issuer"), issuertest.Expired())
	bad := []struct {
		name string
		data map[string][]byte
	}{
		{name: "garbage", data: map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": []byte("garbage")}},
		{name: "expired issuer", data: issuerSecret(t, expired).Data},
		{name: "unknown anchor", data: issuerSecret(t, newIssuer(t, newAnchor(t, "stranger"), "stranger issuer")).Data},
		{name: "key of another issuer", data: map[string][]byte{"tls.crt": next.CertPEM(), "tls.key": issuerSecret(t, ca.issuer).Data["tls.key"]}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			const series = `meshid_ca_reloads_total{material="issuer",result="refused"}`
			before := ca.metric(t, series)
			updateSecret(t, ca.ns, tt.data)
			eventually(t, 10*time.Second, func() error {
				if got := ca.metric(t, series); got != before+1 {
					return fmt.Errorf("%s = %v, want %v", series, got, before+1)
				}
				return nil
			})
			got, err := issuedBy(t, ca, tok)
			if err != nil {
				t.Fatalf("certify after a refused issuer: %v", err)
			}
			if !got.Equal(next.Cert) {
				t.Fatalf("issued by %s after a refused update, want the last good issuer", got.Subject)
			}
		})
	}
	ev := warningEvent(t, ca.ns, "meshid-issuer", "IssuerRefused")
	if !strings.Contains(ev.Message, "keeps the last good one in force") {
		t.Fatalf("event message %q does not say the last good issuer stays", ev.Message)
	}
}

// TestBundle: GetBundle and WatchBundle publish the ConfigMap's anchors; a
// new anchor reaches an open stream without a reconnect; invalid PEM is
// refused and the stream keeps the last good bundle.
func TestBundle(t *testing.T) {
	t.Parallel()
	ca := startCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	got, err := ca.client.GetBundle(ctx, &identityv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSha256() != ca.bundle.SHA256() || got.GetTrustDomain() != identity.DefaultTrustDomain {
		t.Fatalf("GetBundle = %s/%s, want %s", got.GetTrustDomain(), got.GetSha256(), ca.bundle.SHA256())
	}
	stream, err := ca.client.WatchBundle(ctx, &identityv1.WatchBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetSha256() != ca.bundle.SHA256() {
		t.Fatalf("first streamed bundle %s (%v), want the current one", first.GetSha256(), err)
	}

	setBundle := func(pem string) {
		cm, err := need(t).client.CoreV1().ConfigMaps(ca.ns).Get(ctx, "meshid-trust-bundle", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["ca-bundle.crt"] = pem
		if _, err := need(t).client.CoreV1().ConfigMaps(ca.ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Invalid PEM first: refused, nothing is streamed, certificates go on.
	setBundle("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
	warningEvent(t, ca.ns, "meshid-trust-bundle", "BundleRefused")

	both, err := bundle.New(ca.anchor.Cert, newAnchor(t, "next anchor").Cert)
	if err != nil {
		t.Fatal(err)
	}
	setBundle(string(both.PEM()))
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.GetSha256() != both.SHA256() {
		t.Fatalf("streamed bundle %s after the refused one, want the two-anchor bundle %s", second.GetSha256(), both.SHA256())
	}
	parsed, err := bundle.Parse(second.GetPem())
	if err != nil || len(parsed.Anchors()) != 2 {
		t.Fatalf("streamed bundle: %v anchors, %v", len(parsed.Anchors()), err)
	}
	if v := ca.metric(t, `meshid_ca_reloads_total{material="bundle",result="refused"}`); v != 1 {
		t.Fatalf("bundle refusals = %v, want 1", v)
	}

	// Removing the anchor of the issuer in use is held back: issuance
	// would otherwise stop. The two-anchor bundle stays.
	setBundle(string(newAnchor(t, "lone anchor").CertPEM()))
	eventually(t, 10*time.Second, func() error {
		if v := ca.metric(t, `meshid_ca_reloads_total{material="bundle",result="refused"}`); v != 2 {
			return fmt.Errorf("bundle refusals = %v, want 2", v)
		}
		return nil
	})
	if v := ca.metric(t, `meshid_ca_update_refused{material="bundle"}`); v != 1 {
		t.Fatalf("meshid_ca_update_refused{bundle} = %v, want 1", v)
	}
	now, err := ca.client.GetBundle(ctx, &identityv1.GetBundleRequest{})
	if err != nil || now.GetSha256() != both.SHA256() {
		t.Fatalf("bundle after an orphaning update: %s (%v), want the two-anchor bundle", now.GetSha256(), err)
	}
	ns := namespace(t, "bundle")
	serviceAccount(t, ns, "web")
	if _, err := rotation.Certify(ctx, ca.client, token(t, ns, "web", audience, nil), time.Now()); err != nil {
		t.Fatalf("certify after a held-back bundle: %v", err)
	}
}
