package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/api/federation/crd"
	"github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/test/cluster"
)

// controlPlane is one cluster of a federation test: its API server's
// clients and kubeconfig.
type controlPlane struct {
	kubeconfig string
	client     kubernetes.Interface
	dynamic    dynamic.Interface
}

func controlPlaneOf(t *testing.T, c *cluster.Cluster) *controlPlane {
	t.Helper()
	client, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &controlPlane{kubeconfig: c.Kubeconfig, client: client, dynamic: dyn}
}

// installFederationCRD applies the FederatedTrustDomain CRD and waits until
// it is established.
func (cp *controlPlane) installFederationCRD(t *testing.T) {
	t.Helper()
	kubectl := filepath.Join(need(t).cpBin, "kubectl")
	apply := exec.Command(kubectl, "--kubeconfig", cp.kubeconfig, "apply", "--server-side", "-f", "-")
	apply.Stdin = strings.NewReader(string(crd.FederatedTrustDomain))
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("apply the CRD: %v\n%s", err, out)
	}
	// kubectl wait fails at once on a CRD that has no status yet (".status.conditions
	// accessor error"), so it is retried.
	eventually(t, 60*time.Second, func() error {
		wait := exec.Command(kubectl, "--kubeconfig", cp.kubeconfig, "wait", "--for=condition=Established", "--timeout=30s", "crd/federatedtrustdomains.meshid.dev")
		if out, err := wait.CombinedOutput(); err != nil {
			return fmt.Errorf("wait for the CRD: %v\n%s", err, out)
		}
		return nil
	})
}

// federate creates (or replaces the spec of) the FederatedTrustDomain
// name, removed when the test ends.
func (cp *controlPlane) federate(t *testing.T, name string, spec v1alpha1.FederatedTrustDomainSpec) {
	t.Helper()
	ctx := context.Background()
	res := cp.dynamic.Resource(v1alpha1.Resource)
	ftd := &v1alpha1.FederatedTrustDomain{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "FederatedTrustDomain"},
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec,
	}
	if old, err := res.Get(ctx, name, metav1.GetOptions{}); err == nil {
		ftd.ResourceVersion = old.GetResourceVersion()
		obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(ftd)
		if _, err := res.Update(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ftd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// status reads the FederatedTrustDomain name's status.
func (cp *controlPlane) status(t *testing.T, name string) v1alpha1.FederatedTrustDomainStatus {
	t.Helper()
	u, err := cp.dynamic.Resource(v1alpha1.Resource).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ftd v1alpha1.FederatedTrustDomain
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ftd); err != nil {
		t.Fatal(err)
	}
	return ftd.Status
}

// proxyIn starts meshid-proxy in cp for ns/sa of trust domain td, against
// the CA at caAddr whose SPIFFE ID is caID, with anchors as its bundle file.
func (cp *controlPlane) proxyIn(t *testing.T, td, caAddr string, caID spiffeid.ID, anchors []byte, ns, sa string, args ...string) *process {
	t.Helper()
	ctx := context.Background()
	if _, err := cp.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	tr, err := cp.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](3600),
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile, bundleFile := filepath.Join(dir, "token"), filepath.Join(dir, "ca-bundle.crt")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundleFile, anchors, 0o644); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	return startProcess(t, "meshid-proxy", admin, append([]string{
		"--trust-domain", td, "--ca", caAddr, "--ca-id", caID.String(),
		"--token-file", tokenFile, "--trust-bundle-file", bundleFile,
		"--admin-listen", admin, "--poll-interval", "100ms",
	}, args...)...)
}

// TestFederation: two control planes, two trust domains with their own
// anchors (cluster.local in A, b.example in B), a meshid-ca in each serving
// its bundle endpoint (https_spiffe) and fetching the other's
// (FederatedTrustDomain with the other's initial bundle). A proxy of A
// calls a service of B over mTLS, admitted by B's policy naming A's
// identity; another identity of A is refused. B's CA stores what it
// fetched; restarted with A's endpoint down and the initial bundle gone
// from the spec, it still serves A's bundle from the status, and a new
// proxy of B admits A's caller with it.
func TestFederation(t *testing.T) {
	t.Parallel()
	e := need(t)
	ctx := context.Background()
	start := time.Now()
	cb, err := cluster.Start(ctx, cluster.Config{BinDir: e.cpBin, Dir: filepath.Join(t.TempDir(), "cluster-b")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cb.Stop)
	t.Logf("second control plane ready in %s", time.Since(start).Round(time.Millisecond))
	a := &controlPlane{kubeconfig: e.cluster.Kubeconfig, client: e.client}
	if a.dynamic, err = dynamic.NewForConfig(e.cluster.RESTConfig); err != nil {
		t.Fatal(err)
	}
	b := controlPlaneOf(t, cb)
	a.installFederationCRD(t)
	b.installFederationCRD(t)
	t.Run("the API server refuses a bad FederatedTrustDomain", func(t *testing.T) {
		for name, tc := range map[string]struct {
			spec v1alpha1.FederatedTrustDomainSpec
			want string
		}{
			"https_spiffe without its ID": {v1alpha1.FederatedTrustDomainSpec{TrustDomain: "x.example", BundleEndpointURL: "https://x.example", Profile: v1alpha1.ProfileSPIFFE}, "needs endpointSPIFFEID"},
			"plain http":                  {v1alpha1.FederatedTrustDomainSpec{TrustDomain: "x.example", BundleEndpointURL: "http://x.example", Profile: v1alpha1.ProfileWeb}, "bundleEndpointURL"},
			"unknown profile":             {v1alpha1.FederatedTrustDomainSpec{TrustDomain: "x.example", BundleEndpointURL: "https://x.example", Profile: "https"}, "profile"},
			"trust domain with a scheme":  {v1alpha1.FederatedTrustDomainSpec{TrustDomain: "spiffe://x.example", BundleEndpointURL: "https://x.example", Profile: v1alpha1.ProfileWeb}, "trustDomain"},
		} {
			obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&v1alpha1.FederatedTrustDomain{
				TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "FederatedTrustDomain"},
				ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: tc.spec,
			})
			_, err := b.dynamic.Resource(v1alpha1.Resource).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: create = %v, want a refusal naming %q", name, err, tc.want)
				_ = b.dynamic.Resource(v1alpha1.Resource).Delete(ctx, "bad", metav1.DeleteOptions{})
			}
		}
	})

	tdB := spiffeid.RequireTrustDomainFromString("b.example")
	anchorB := newAnchor(t, "b anchor")
	issuerB := newIssuer(t, anchorB, "b issuer")
	caBID := spiffeid.RequireFromSegments(tdB, "ns", "meshid", "sa", "meshid-ca")
	fedA, fedB := freeAddr(t), freeAddr(t)

	// A's CA (the shared control plane, cluster.local).
	caA := startCA(t, "--federation-listen", fedA, "--federation-refresh-hint", "2s", "--federated-trust-domains")
	ftdNameA, ftdNameB := "b-example-"+caA.ns, "cluster-local-"+caA.ns // in A: B's domain; in B: A's
	a.federate(t, ftdNameA, v1alpha1.FederatedTrustDomainSpec{
		TrustDomain: tdB.Name(), BundleEndpointURL: "https://" + fedB, Profile: v1alpha1.ProfileSPIFFE,
		EndpointSPIFFEID: caBID.String(), InitialBundle: string(anchorB.CertPEM()),
	})

	// B's CA, on its own control plane, b.example.
	for _, obj := range []func() error{
		func() error {
			_, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshid"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := b.client.CoreV1().Secrets("meshid").Create(ctx, issuerSecret(t, issuerB), metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := b.client.CoreV1().ConfigMaps("meshid").Create(ctx, bundleConfigMap(anchorB.CertPEM()), metav1.CreateOptions{})
			return err
		},
	} {
		if err := obj(); err != nil {
			t.Fatal(err)
		}
	}
	b.federate(t, ftdNameB, v1alpha1.FederatedTrustDomainSpec{
		TrustDomain: trustDomain.Name(), BundleEndpointURL: "https://" + fedA, Profile: v1alpha1.ProfileSPIFFE,
		EndpointSPIFFEID: caA.id(t).String(), InitialBundle: string(caA.anchor.CertPEM()),
	})
	caBArgs := []string{"--kubeconfig", b.kubeconfig, "--namespace", "meshid", "--trust-domain", tdB.Name(),
		"--federation-listen", fedB, "--federation-refresh-hint", "2s", "--federated-trust-domains"}
	caBAddr, caB := runCA(t, "meshid", caBArgs...)

	// api in B admits A's web, by ID; not A's evil.
	nsA := namespace(t, "fed")
	webID := spiffeid.RequireFromSegments(trustDomain, "ns", nsA, "sa", "web")
	apiID := spiffeid.RequireFromSegments(tdB, "ns", "shop", "sa", "api")
	apiApp, apiIn := app(t, "api"), freeAddr(t)
	_, apiPort, _ := net.SplitHostPort(apiIn)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, fmt.Sprintf("ports:\n- port: %s\n  allow:\n  - id: %s\n", apiPort, webID))
	api := b.proxyIn(t, tdB.Name(), caBAddr, caBID, anchorB.CertPEM(), "shop", "api", "--inbound", apiIn+"="+apiApp, "--policy", policyFile)

	for _, sa := range []string{"web", "evil"} {
		serviceAccount(t, nsA, sa)
	}
	webOut, evilOut := freeAddr(t), freeAddr(t)
	startProxy(t, caA, nsA, "web", "--outbound", webOut+"="+apiIn+",id="+apiID.String())
	startProxy(t, caA, nsA, "evil", "--outbound", evilOut+"="+apiIn+",id="+apiID.String())

	t.Run("A's web reaches B's api", func(t *testing.T) {
		eventually(t, 60*time.Second, func() error {
			got, err := get(fresh, webOut, "ping")
			if err != nil || got != "hello from api: ping" {
				return fmt.Errorf("web -> api: %q, %v", got, err)
			}
			return nil
		})
	})

	t.Run("A's evil is refused by B's policy", func(t *testing.T) {
		if got, err := get(fresh, evilOut, "ping"); err == nil {
			t.Fatalf("evil -> api answered %q", got)
		}
		evilID := spiffeid.RequireFromSegments(trustDomain, "ns", nsA, "sa", "evil")
		series := fmt.Sprintf(`meshid_proxy_policy_denials_total{peer_id=%q,port=%q}`, evilID, apiPort)
		eventually(t, 10*time.Second, func() error {
			if v := api.metric(t, series); v < 1 {
				return fmt.Errorf("%s = %v", series, v)
			}
			return nil
		})
	})

	t.Run("each CA stored the other's bundle", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			for _, s := range []struct {
				cp   *controlPlane
				name string
			}{{a, ftdNameA}, {b, ftdNameB}} {
				st := s.cp.status(t, s.name)
				if st.Bundle == "" || st.LastRefresh == nil {
					return fmt.Errorf("%s: status %+v, want a fetched bundle", s.name, st)
				}
			}
			return nil
		})
		first := b.status(t, ftdNameB).LastRefresh
		eventually(t, 20*time.Second, func() error {
			if st := b.status(t, ftdNameB); !st.LastRefresh.After(first.Time) {
				return fmt.Errorf("no refresh after %s within the 2 s hint (and its 10 s floor)", first)
			}
			return nil
		})
		out, _ := meshid(t, "", "check", "--kubeconfig", b.kubeconfig, "-n", "meshid", "--deployment", "", "--trust-domain", tdB.Name())
		wantRow(t, out, "federated trust domain cluster.local", "OK", "last refresh", "1 anchors from the stored bundle")
	})

	t.Run("B's CA restarted trusts A from what it stored", func(t *testing.T) {
		if err := caB.stop(); err != nil {
			t.Fatal(err)
		}
		// Nothing to fetch (an endpoint that refuses connections) and no
		// initial bundle: only the status holds A's anchors.
		b.federate(t, ftdNameB, v1alpha1.FederatedTrustDomainSpec{
			TrustDomain: trustDomain.Name(), BundleEndpointURL: "https://" + freeAddr(t), Profile: v1alpha1.ProfileSPIFFE,
			EndpointSPIFFEID: caA.id(t).String(),
		})
		_, caB2 := runCAAt(t, "meshid", caBAddr, caBArgs...)
		// A new proxy of B learns A's bundle only from the restarted CA.
		api2In := freeAddr(t)
		_, api2Port, _ := net.SplitHostPort(api2In)
		policy2 := filepath.Join(t.TempDir(), "policy.yaml")
		writeFile(t, policy2, fmt.Sprintf("ports:\n- port: %s\n  allow:\n  - id: %s\n", api2Port, webID))
		b.proxyIn(t, tdB.Name(), caBAddr, caBID, anchorB.CertPEM(), "shop", "api", "--inbound", api2In+"="+apiApp, "--policy", policy2)
		web2Out := freeAddr(t)
		startProxy(t, caA, nsA, "web", "--outbound", web2Out+"="+api2In+",id="+apiID.String())
		eventually(t, 60*time.Second, func() error {
			got, err := get(fresh, web2Out, "ping")
			if err != nil || got != "hello from api: ping" {
				return fmt.Errorf("web -> api behind the restarted CA: %q, %v", got, err)
			}
			return nil
		})
		eventually(t, 30*time.Second, func() error {
			if v := caB2.metric(t, `meshid_ca_foreign_bundle_refused_total{reason="unreachable",trust_domain="cluster.local"}`); v < 1 {
				return fmt.Errorf("B's restarted CA has not counted a failed fetch yet")
			}
			if st := b.status(t, ftdNameB); st.Failures < 1 || st.LastError == "" || st.Bundle == "" {
				return fmt.Errorf("status %+v, want the failure stored beside the last good bundle", st)
			}
			return nil
		})
		out, _ := meshid(t, "", "check", "--kubeconfig", b.kubeconfig, "-n", "meshid", "--deployment", "", "--trust-domain", tdB.Name())
		wantRow(t, out, "federated trust domain cluster.local", "WARN", "refused fetches since the last good one", "foreign: unreachable")
	})
}
