package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/rotation"
	"github.com/meshid/meshid/test/stepca"
)

// upstreamTTL is the --issuer-ttl of TestUpstreamStepCA: short, so that
// the test outlives an intermediate (step-ca backdates NotBefore, so each
// one lives a little longer).
const upstreamTTL = 2 * time.Minute

// TestUpstreamStepCA: meshid-ca gets its intermediate from a real step-ca
// (--issuer-source step-ca, no issuer Secret) and issues leaves that
// openssl and go-spiffe verify against step-ca's root; with step-ca stopped
// past the intermediate's half life it keeps issuing from it (and says so:
// metrics, Event), stops being ready only when it truly expires, and
// recovers by itself with a new intermediate when step-ca returns.
func TestUpstreamStepCA(t *testing.T) {
	t.Parallel()
	e := need(t)
	srv := stepca.Start(t, stepca.Bin(t), 24*time.Hour)
	ctx := context.Background()
	ns := namespace(t, "meshid")
	// The operator puts step-ca's root in the trust bundle ConfigMap.
	if _, err := e.client.CoreV1().ConfigMaps(ns).Create(ctx, bundleConfigMap(srv.RootPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootFile, keyFile := filepath.Join(dir, "root_ca.crt"), filepath.Join(dir, "provisioner.json")
	if err := os.WriteFile(rootFile, srv.RootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, srv.KeyJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	addr, admin := freeAddr(t), freeAddr(t)
	p := &caProcess{ns: ns, anchor: srv.Root, addr: addr}
	p.process = startProcess(t, "meshid-ca", admin,
		"--kubeconfig", e.cluster.Kubeconfig, "--namespace", ns, "--trust-bundle", "meshid-trust-bundle",
		"--issuer-source", "step-ca", "--step-ca-url", srv.URL, "--step-ca-root", rootFile,
		"--step-ca-provisioner", srv.Provisioner, "--step-ca-provisioner-key", keyFile, "--issuer-ttl", upstreamTTL.String(),
		"--listen", addr, "--admin-listen", admin, "--replica", "ca-0", "--fleet-report-interval", "200ms")
	var err error
	if p.bundle, err = bundle.Parse(srv.RootPEM); err != nil {
		t.Fatal(err)
	}
	conn, err := rotation.DialCA(addr, p.bundle.X509Bundle(trustDomain), p.id(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client = identityv1.NewIdentityClient(conn)
	eventually(t, 5*time.Second, func() error {
		if got := p.metric(t, `meshid_ca_upstream_requests_total{result="ok"}`); got != 1 {
			return fmt.Errorf("%v successful requests to step-ca, want 1", got)
		}
		return nil
	})

	shop := namespace(t, "shop")
	serviceAccount(t, shop, "web")
	certify := func() (*x509svid.SVID, error) {
		got, err := rotation.Certify(ctx, p.client, token(t, shop, "web", audience, nil), time.Now())
		if err != nil {
			return nil, err
		}
		return got.SVID, nil
	}
	svid, err := certify()
	if err != nil {
		t.Fatal(err)
	}
	first := svid.Certificates[1]
	if !first.IsCA || first.MaxPathLen != 0 || !first.MaxPathLenZero || first.CheckSignatureFrom(srv.Root.Cert) != nil {
		t.Fatalf("the leaf's issuer %s: CA %v, pathlen %d; want a pathlen-0 CA signed by step-ca's root", first.Subject, first.IsCA, first.MaxPathLen)
	}
	if life := first.NotAfter.Sub(first.NotBefore); life < upstreamTTL || life > upstreamTTL+2*time.Minute {
		t.Fatalf("the intermediate lives %s, want the %s asked (and step-ca's backdate)", life, upstreamTTL)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, p.bundle.X509Bundle(trustDomain)); err != nil {
		t.Fatalf("go-spiffe against step-ca's root: %v", err)
	}
	opensslVerify(t, svid, p)
	if svid.Certificates[0].NotAfter.After(first.NotAfter) {
		t.Fatal("the leaf outlives its intermediate")
	}
	// meshid check reads the replica's report: no issuer Secret needed.
	checkUpstream := func(within time.Duration, status string, details ...string) {
		t.Helper()
		eventually(t, within, func() error {
			out, code := meshid(t, "", "check", "--kubeconfig", e.cluster.Kubeconfig, "-n", ns, "--deployment", "")
			line := checkRow(out, "upstream ca-0")
			if code != 0 || !strings.Contains(line, " "+status+" ") {
				return fmt.Errorf("meshid check: exit %d, want 0 with the upstream row %s:\n%s", code, status, out)
			}
			for _, d := range details {
				if !strings.Contains(line, d) {
					return fmt.Errorf("the upstream row does not say %q:\n%s", d, out)
				}
			}
			return nil
		})
	}
	checkUpstream(10*time.Second, "OK", "step-ca "+srv.URL+" provisioner meshid reachable", "key in memory", "last renewal")

	t.Log("step-ca stopped past the intermediate's half life: meshid-ca keeps issuing from it")
	srv.Stop(t)
	stopped := time.Now()
	half := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) / 2)
	// Once renewal fails, and before the intermediate's last third (where
	// the issuer row fails), check warns and names the time to outage.
	checkUpstream(time.Until(half)+20*time.Second, "WARN", "unreachable", "renewal(s) failed in a row", "time to outage")
	eventually(t, upstreamTTL+time.Minute, func() error {
		if n := p.metric(t, `meshid_ca_upstream_requests_total{result="failed"}`); n < 2 {
			return fmt.Errorf("%v failed renewals", n)
		}
		if time.Now().Before(half.Add(5*time.Second)) || time.Since(stopped) < first.NotAfter.Sub(first.NotBefore)/2 {
			return fmt.Errorf("step-ca down for %s, not past half life", time.Since(stopped).Round(time.Second))
		}
		return nil
	})
	t.Logf("step-ca down for %s; the intermediate lives %s, half life passed %s ago", time.Since(stopped).Round(time.Second), first.NotAfter.Sub(first.NotBefore), time.Since(half).Round(time.Second))
	svid, err = certify()
	if err != nil {
		t.Fatalf("with step-ca down and the intermediate valid: %v", err)
	}
	if !svid.Certificates[1].Equal(first) {
		t.Fatal("the leaf is not from the intermediate in force")
	}
	if code, body := readyStatus(p.process); code != http.StatusOK {
		t.Fatalf("not ready with a valid intermediate: %d %s", code, body)
	}
	if p.metric(t, `meshid_ca_upstream_up{upstream="step-ca `+srv.URL+` provisioner meshid"}`) != 0 {
		t.Error("meshid_ca_upstream_up is not 0 with step-ca down")
	}
	if ev := warningEvent(t, ns, "ca-0", "UpstreamUnreachable"); !strings.Contains(ev.Message, srv.URL) {
		t.Errorf("the Event does not name step-ca: %s", ev.Message)
	}

	t.Log("past its expiry: not ready, nothing issued")
	eventually(t, time.Until(first.NotAfter)+30*time.Second, func() error {
		if code, _ := readyStatus(p.process); code == http.StatusOK {
			return fmt.Errorf("still ready at %s (the intermediate expires at %s)", time.Now().Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
		}
		return nil
	})
	if _, err := certify(); err == nil {
		t.Fatal("a leaf was issued with the intermediate expired")
	}

	t.Log("step-ca back: a new intermediate by itself, issuing again")
	srv.Restart(t)
	restarted := time.Now()
	eventually(t, upstreamTTL, func() error {
		if code, body := readyStatus(p.process); code != http.StatusOK {
			return fmt.Errorf("not ready: %d %s", code, body)
		}
		return nil
	})
	t.Logf("ready again %s after step-ca returned", time.Since(restarted).Round(100*time.Millisecond))
	svid, err = certify()
	if err != nil {
		t.Fatalf("after step-ca returned: %v", err)
	}
	if second := svid.Certificates[1]; second.Equal(first) || second.CheckSignatureFrom(srv.Root.Cert) != nil {
		t.Fatal("the leaf after recovery is not from a new intermediate of step-ca's root")
	}
	opensslVerify(t, svid, p)
	if p.metric(t, `meshid_ca_upstream_renewal_failures{upstream="step-ca `+srv.URL+` provisioner meshid"}`) != 0 {
		t.Error("renewal failures not back to 0")
	}

	var jwk struct{ D string }
	if err := json.Unmarshal(srv.KeyJSON, &jwk); err != nil || jwk.D == "" {
		t.Fatalf("the provisioner key has no d: %v", err)
	}
	if strings.Contains(p.logs(t), jwk.D) {
		t.Fatal("meshid-ca logged the provisioner's private key")
	}
}
