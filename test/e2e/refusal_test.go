package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/rotation"
)

// certifyWith asks ca for a certificate with a fresh key and no SAN.
func certifyWith(t *testing.T, ca *caProcess, token string) (*identityv1.CertifyResponse, error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return ca.client.Certify(context.Background(), &identityv1.CertifyRequest{Csr: der, Token: token})
}

// refused checks that err is code and counted once more under reason, and
// returns the message the caller got.
func refused(t *testing.T, ca *caProcess, err error, code codes.Code, reason string, counted float64) string {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("code %s (%v), want %s", status.Code(err), err, code)
	}
	series := `meshid_ca_certificates_refused_total{reason="` + reason + `"}`
	if got := ca.metric(t, series); got != counted {
		t.Errorf("%s = %v, want %v", series, got, counted)
	}
	return status.Convert(err).Message()
}

// TestMultiAudienceToken: a real token for the CA's audience and a Vault's
// is refused by default (the Vault could replay it to the CA), counted, with
// a message that says what to project instead; --allow-multi-audience-tokens
// accepts it.
func TestMultiAudienceToken(t *testing.T) {
	t.Parallel()
	strict := startCA(t)
	lenient := startCA(t, "--allow-multi-audience-tokens")
	ns := namespace(t, "multiaud")
	serviceAccount(t, ns, "web")
	const vault = "https://vault.example.internal"
	tok := tokenFor(t, ns, "web", []string{audience, vault}, nil)

	_, err := certifyWith(t, strict, tok)
	msg := refused(t, strict, err, codes.Unauthenticated, "token_multi_audience", 1)
	if strings.Contains(msg, vault) || !strings.Contains(msg, "alone") {
		t.Errorf("message %q: want one that says to project a token for the CA's audience alone, naming no other", msg)
	}
	if logs := strict.logs(t); !strings.Contains(logs, vault) || strings.Contains(logs, tok) {
		t.Errorf("the CA's log does not name the token's audiences, or holds the token:\n%s", logs)
	}
	if _, err := certifyWith(t, strict, token(t, ns, "web", audience, nil)); err != nil {
		t.Fatalf("a token for the CA's audience alone was refused: %v", err)
	}
	resp, err := certifyWith(t, lenient, tok)
	if err != nil || resp.GetSpiffeId() != "spiffe://cluster.local/ns/"+ns+"/sa/web" {
		t.Fatalf("with --allow-multi-audience-tokens: %v, %v", resp.GetSpiffeId(), err)
	}
}

// TestReservedServiceAccounts: meshid install reserves meshid-webhook's
// service account; meshid-ca run with that flag, and one more account named
// by the operator, refuses real tokens of both and of the CA's own account,
// each counted, and still issues to others.
func TestReservedServiceAccounts(t *testing.T) {
	t.Parallel()
	home := namespace(t, "reserved")
	rendered, code := meshid(t, "", "install", "--cert-manager", "-n", home)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, rendered)
	}
	var flag string
	for _, a := range deploymentArgs(t, rendered) {
		if strings.HasPrefix(a, "--reserved-service-accounts=") {
			flag = a
		}
	}
	if want := "--reserved-service-accounts=" + home + "/meshid-webhook"; flag != want {
		t.Fatalf("the rendered Deployment runs meshid-ca with %q, want %q", flag, want)
	}
	other := namespace(t, "vault")
	ca := startCA(t, flag, "--reserved-service-accounts", other+"/vault")
	serviceAccount(t, home, "meshid-webhook")
	serviceAccount(t, other, "vault")
	serviceAccount(t, other, "web")
	serviceAccount(t, ca.ns, "meshid-ca")

	for i, sa := range [][2]string{{home, "meshid-webhook"}, {other, "vault"}, {ca.ns, "meshid-ca"}} {
		_, err := certifyWith(t, ca, token(t, sa[0], sa[1], audience, nil))
		msg := refused(t, ca, err, codes.PermissionDenied, "reserved_identity", float64(i+1))
		if !strings.Contains(msg, "reserved") || !strings.Contains(msg, sa[0]+"/sa/"+sa[1]) {
			t.Errorf("%s/%s: message %q does not say the identity is reserved", sa[0], sa[1], msg)
		}
	}
	if _, err := certifyWith(t, ca, token(t, other, "web", audience, nil)); err != nil {
		t.Fatalf("an account that is not reserved was refused: %v", err)
	}
}

// TestRefusalsHideTheAPIServer: a token of a service account deleted and
// created again, and one bound to a pod deleted and created again (a
// StatefulSet's), are refused by the real API server, which names the new
// and old UIDs. The caller gets one fixed message for both, holding no
// UID; the CA's log keeps what the API server said.
func TestRefusalsHideTheAPIServer(t *testing.T) {
	t.Parallel()
	ca := startCA(t, "--token-cache-ttl", "0") // an early acceptance is not reused
	ctx := context.Background()
	client := need(t).client
	ns := namespace(t, "leak")
	oldSA := serviceAccount(t, ns, "re")
	saToken := token(t, ns, "re", audience, nil)
	if err := client.CoreV1().ServiceAccounts(ns).Delete(ctx, "re", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	newSA := serviceAccount(t, ns, "re")
	serviceAccount(t, ns, "web")
	oldPod := pod(t, ns, "web-0", "web")
	podToken := token(t, ns, "web", audience, oldPod)
	if err := client.CoreV1().Pods(ns).Delete(ctx, oldPod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	var newPodUID string
	eventually(t, 10*time.Second, func() error {
		p, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: oldPod.Name},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			return err // still terminating
		}
		newPodUID = string(p.UID)
		return nil
	})
	uids := []string{string(oldSA.UID), string(newSA.UID), string(oldPod.UID), newPodUID}

	var msgs []string
	for _, tok := range []string{saToken, podToken} {
		// The API server's caches see the new objects within moments.
		var err error
		eventually(t, 10*time.Second, func() error {
			if _, err = certifyWith(t, ca, tok); status.Code(err) != codes.Unauthenticated {
				return fmt.Errorf("not refused yet: %v", err)
			}
			return nil
		})
		msgs = append(msgs, status.Convert(err).Message())
	}
	for _, msg := range msgs {
		for _, uid := range uids {
			if strings.Contains(msg, uid) {
				t.Errorf("the caller is told %q, which names UID %s", msg, uid)
			}
		}
	}
	if msgs[0] != msgs[1] {
		t.Errorf("two refusals for the same reason read differently:\n%s\n%s", msgs[0], msgs[1])
	}
	logs := ca.logs(t)
	for _, uid := range []string{string(newSA.UID), newPodUID} {
		if !strings.Contains(logs, uid) {
			t.Errorf("the CA's log lost the API server's answer naming UID %s", uid)
		}
	}
	t.Logf("the caller was told: %s", msgs[0])
}

// TestWatchPolicyRefusals: a proxy asking for the policy of a pod that does
// not exist, or of a pod that runs as another service account, gets the same
// PERMISSION_DENIED, which names no other account; an unknown default mode
// is refused with the valid ones; its own pod's policy comes.
func TestWatchPolicyRefusals(t *testing.T) {
	t.Parallel()
	applyPolicyCRD(t)
	ca := startCA(t, "--watch-policies")
	ctx := context.Background()
	ns := namespace(t, "watchpol")
	serviceAccount(t, ns, "web")
	serviceAccount(t, ns, "hidden-account")
	pod(t, ns, "web-0", "web")
	pod(t, ns, "other-0", "hidden-account")
	issued, err := rotation.Certify(ctx, ca.client, token(t, ns, "web", audience, nil), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := rotation.DialCA(ca.addr, ca.bundle.X509Bundle(trustDomain), ca.id(t), rotation.WithClientCertificate(issued.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := identityv1.NewIdentityClient(conn)
	watch := func(pod, mode string) (*identityv1.Policy, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := client.WatchPolicy(ctx, &identityv1.WatchPolicyRequest{Pod: pod, DefaultMode: mode})
		if err != nil {
			return nil, err
		}
		return stream.Recv()
	}

	_, missing := watch("missing-0", "")
	_, other := watch("other-0", "")
	if status.Code(missing) != codes.PermissionDenied || status.Code(other) != codes.PermissionDenied {
		t.Fatalf("no such pod: %v; another account's pod: %v; want PERMISSION_DENIED for both", missing, other)
	}
	m, o := status.Convert(missing).Message(), status.Convert(other).Message()
	if strings.ReplaceAll(m, "missing-0", "POD") != strings.ReplaceAll(o, "other-0", "POD") {
		t.Errorf("the answers tell a missing pod from another account's:\n%s\n%s", m, o)
	}
	if strings.Contains(o, "hidden-account") {
		t.Errorf("the answer names the other pod's service account: %s", o)
	}

	_, err = watch("web-0", "allow-everyone")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "cluster-authenticated") {
		t.Errorf("unknown default mode: %v; want INVALID_ARGUMENT listing the modes", err)
	}
	pol, err := watch("web-0", "")
	if err != nil || len(pol.GetYaml()) == 0 {
		t.Fatalf("the proxy's own pod: %v, %v", pol, err)
	}
	t.Logf("no such pod and another account's pod both read: %s", o)
}
