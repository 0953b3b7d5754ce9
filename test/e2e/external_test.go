package e2e_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/rotation"
)

// applyExternalWorkloadCRD installs the CRD meshid install renders.
func applyExternalWorkloadCRD(t *testing.T) {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	crd := filepath.Join(wd, "..", "..", "api", "workload", "crd", "meshid.dev_externalworkloads.yaml")
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", crd); err != nil {
		t.Fatalf("apply the CRD: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/externalworkloads.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
}

func externalWorkload(t *testing.T, ns, name, sa string) {
	t.Helper()
	obj := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: ExternalWorkload\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    app: %s\nspec:\n  serviceAccount: %s\n  addresses: [127.0.0.1, 192.0.2.10]\n  ports:\n  - port: 8443\n    name: https\n", name, ns, name, sa)
	if out, err := kubectl(t, obj, "apply", "-f", "-"); err != nil {
		t.Fatalf("create ExternalWorkload %s/%s: %v\n%s", ns, name, err, out)
	}
}

// joined is what meshid workload join -o json prints.
type joined struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Command []string  `json:"command"`
}

// joinToken runs meshid workload join -o json.
func joinToken(t *testing.T, ca *caProcess, ns, name string, args ...string) joined {
	t.Helper()
	out, code := meshid(t, "", append([]string{"workload", "join", name, "-n", ns, "-o", "json", "--kubeconfig", need(t).cluster.Kubeconfig,
		"--ca", ca.addr, "--ca-id", ca.id(t).String()}, args...)...)
	if code != 0 {
		t.Fatalf("meshid workload join: exit %d\n%s", code, out)
	}
	var j joined
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("meshid workload join -o json: %v\n%s", err, out)
	}
	return j
}

func extStatus(t *testing.T, ns, name string) map[string]any {
	t.Helper()
	out, err := kubectl(t, "", "get", "externalworkload", name, "-n", ns, "-o", "jsonpath={.status}")
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	st := map[string]any{}
	if out != "" {
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status %q: %v", out, err)
		}
	}
	return st
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("got %v; want %s saying %q", err, code, contains)
	}
}

// TestExternalWorkload: a meshid-proxy process outside any pod, with no
// service-account token, joins as ExternalWorkload vm-1 with the command
// meshid workload join printed, calls an in-cluster workload (db's proxy,
// whose policy admits only vm-1's service account) with its CA-issued
// identity, renews with its certificate (kept 0600 in its state dir), is
// refused renewal after revoke, joins again with a new token, and after
// its ExternalWorkload is deleted is refused renewal and cut off when its
// last certificate expires.
func TestExternalWorkload(t *testing.T) {
	t.Parallel()
	const ttl = 15 * time.Second
	applyExternalWorkloadCRD(t)
	ca := startCA(t, "--external-workloads", "--external-leaf-ttl", ttl.String())
	ns := namespace(t, "ext")
	serviceAccount(t, ns, "vm")
	serviceAccount(t, ns, "db")
	externalWorkload(t, ns, "vm-1", "vm")
	bad := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: ExternalWorkload\nmetadata:\n  name: bad\n  namespace: %s\nspec:\n  serviceAccount: vm\n  addresses: [db.example.com]\n", ns)
	if o, err := kubectl(t, bad, "apply", "-f", "-"); err == nil || !strings.Contains(o, "addresses must be IP addresses") {
		t.Fatalf("an ExternalWorkload with a host name for an address: %v\n%s", err, o)
	}

	dbApp := app(t, "db")
	dbIn := freeAddr(t)
	_, dbPort, _ := net.SplitHostPort(dbIn)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, fmt.Sprintf("ports:\n- port: %s\n  mode: deny\n  allow:\n  - serviceAccount: %s/vm\n", dbPort, ns))
	startProxy(t, ca, ns, "db", "--inbound", dbIn+"="+dbApp, "--policy", policyFile)

	machine := t.TempDir()
	tokenFile, bundleFile, stateDir := filepath.Join(machine, "join-token"), filepath.Join(machine, "ca-bundle.crt"), filepath.Join(machine, "state")
	if err := os.WriteFile(bundleFile, ca.anchor.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	admin, out := freeAddr(t), freeAddr(t)
	dbID := "spiffe://cluster.local/ns/" + ns + "/sa/db"
	j := joinToken(t, ca, ns, "vm-1", "--join-token-file", tokenFile, "--trust-bundle-file", bundleFile, "--state-dir", stateDir,
		"--proxy-binary", "meshid-proxy", "--proxy-arg=--admin-listen="+admin, "--proxy-arg=--outbound="+out+"="+dbIn+",id="+dbID,
		"--proxy-arg=--poll-interval=100ms")
	if st := extStatus(t, ns, "vm-1"); st["join"] == nil || strings.Contains(fmt.Sprint(st), j.Token) {
		t.Fatalf("status %v: want the pending token's hash, never the token", st)
	}
	if err := os.WriteFile(tokenFile, []byte(j.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if j.Command[0] != "meshid-proxy" || strings.Contains(strings.Join(j.Command, " "), "--token-file") {
		t.Fatalf("printed command %q: want meshid-proxy with no --token-file", j.Command)
	}
	ext := startProcess(t, "meshid-proxy", admin, j.Command[1:]...)
	vmID := "spiffe://cluster.local/ns/" + ns + "/sa/vm"
	ident := identityAt(t, fresh, "http://"+admin)
	if ident.SPIFFEID != vmID {
		t.Fatalf("the external proxy holds %s; want %s", ident.SPIFFEID, vmID)
	}
	if st := extStatus(t, ns, "vm-1"); st["join"] != nil || !strings.EqualFold(fmt.Sprint(st["serial"]), ident.Serial) {
		t.Fatalf("status %v after the join: want the token used up and serial %s", st, ident.Serial)
	}

	t.Run("listed as active", func(t *testing.T) {
		o, code := meshid(t, "", "workload", "list", "-n", ns, "-o", "json", "--kubeconfig", need(t).cluster.Kubeconfig)
		var rows []struct {
			Name, State, Serial string
			NotAfter            *time.Time `json:"not_after"`
		}
		if err := json.Unmarshal([]byte(o), &rows); code != 0 || err != nil || len(rows) != 1 || rows[0].Name != "vm-1" || rows[0].State != "active" ||
			!strings.EqualFold(rows[0].Serial, ident.Serial) || rows[0].NotAfter == nil {
			t.Fatalf("meshid workload list: exit %d, %v\n%s", code, err, o)
		}
		if o, code := meshid(t, "", "workload", "list", "-n", ns, "--kubeconfig", need(t).cluster.Kubeconfig); code != 0 || !strings.Contains(o, "vm-1") || !strings.Contains(o, "active") {
			t.Fatalf("meshid workload list: exit %d\n%s", code, o)
		}
	})
	t.Run("calls db under db's policy", func(t *testing.T) {
		got, err := get(fresh, out, "ping")
		if err != nil || got != "hello from db: ping" {
			t.Fatalf("vm-1 -> db: %q, %v", got, err)
		}
	})
	t.Run("key and certificate in the state dir", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(stateDir, "svid.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("svid.key: %v, %v; want mode 0600", fi, err)
		}
	})
	t.Run("the token a second time", func(t *testing.T) {
		_, err := rotation.JoinExternal(context.Background(), ca.client, ns, "vm-1", j.Token, time.Now())
		wantCode(t, err, codes.PermissionDenied, "already used")
	})
	t.Run("renews with its certificate", func(t *testing.T) {
		first := ident.Serial
		eventually(t, 2*ttl, func() error {
			now := identityAt(t, fresh, "http://"+admin)
			if now.Serial == first {
				return fmt.Errorf("still serial %s", first)
			}
			if st := extStatus(t, ns, "vm-1"); !strings.EqualFold(fmt.Sprint(st["serial"]), now.Serial) {
				return fmt.Errorf("status serial %v, proxy's %s", st["serial"], now.Serial)
			}
			return nil
		})
		if v := ca.metric(t, `meshid_ca_external_certificates_issued_total{method="renew"}`); v < 1 {
			t.Fatalf("renewals counted: %v", v)
		}
		if got, err := get(fresh, out, "after renewal"); err != nil || got != "hello from db: after renewal" {
			t.Fatalf("vm-1 -> db after renewal: %q, %v", got, err)
		}
	})

	// The API server refuses loopback endpoints: only 192.0.2.10 is
	// published (no traffic goes there; the slice is what is checked).
	t.Run("published behind a Service that selects it", func(t *testing.T) {
		svc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: vm\n  namespace: %s\nspec:\n  selector:\n    app: vm-1\n  ports:\n  - name: https\n    port: 443\n    targetPort: https\n", ns)
		if o, err := kubectl(t, svc, "apply", "-f", "-"); err != nil {
			t.Fatalf("create Service: %v\n%s", err, o)
		}
		eventually(t, 10*time.Second, func() error {
			o, err := kubectl(t, "", "get", "endpointslice", "vm.vm-1", "-n", ns, "-o", "jsonpath={.metadata.labels.kubernetes\\.io/service-name} {.endpoints[0].addresses[0]} {.ports[0].port} {.endpoints[0].targetRef.kind} {.metadata.labels.meshid\\.dev/service-account}")
			if err != nil || o != "vm 192.0.2.10 8443 ExternalWorkload vm" {
				return fmt.Errorf("EndpointSlice vm.vm-1: %q, %v", o, err)
			}
			return nil
		})
	})

	t.Run("a certificate not issued to it", func(t *testing.T) {
		// A pod's certificate of the same service account.
		pod := svidClient(t, ca, ns, "vm")
		_, err := rotation.RenewExternal(context.Background(), pod, "vm-1", time.Now())
		wantCode(t, err, codes.PermissionDenied, "not the one meshid-ca issued last")
		// No certificate at all.
		_, err = rotation.RenewExternal(context.Background(), ca.client, "vm-1", time.Now())
		wantCode(t, err, codes.Unauthenticated, "")
	})

	t.Run("tokens: another workload's, expired", func(t *testing.T) {
		externalWorkload(t, ns, "vm-2", "vm")
		unit, code := meshid(t, "", "workload", "join", "vm-2", "-n", ns, "--systemd", "--kubeconfig", need(t).cluster.Kubeconfig, "--ca", ca.addr)
		if code != 0 || !strings.Contains(unit, "ExecStart=/usr/local/bin/meshid-proxy --external-workload "+ns+"/vm-2") || !strings.Contains(unit, "StateDirectoryMode=0700") || !strings.Contains(unit, "meshid-join-") {
			t.Fatalf("meshid workload join --systemd: exit %d\n%s", code, unit)
		}
		j2 := joinToken(t, ca, ns, "vm-2") // replaces the token the unit's text printed
		_, err := rotation.JoinExternal(context.Background(), ca.client, ns, "vm-1", j2.Token, time.Now())
		wantCode(t, err, codes.PermissionDenied, "for another workload")
		// An expired token, written as meshid workload join would have.
		tok, join, err := external.NewToken(time.Now().Add(-time.Second))
		if err != nil {
			t.Fatal(err)
		}
		patch := fmt.Sprintf(`{"status":{"join":{"sha256":%q,"expires":%q}}}`, join.SHA256, join.Expires.UTC().Format(time.RFC3339))
		if o, err := kubectl(t, "", "patch", "externalworkload", "vm-2", "-n", ns, "--subresource=status", "--type=merge", "-p", patch); err != nil {
			t.Fatalf("patch: %v\n%s", err, o)
		}
		_, err = rotation.JoinExternal(context.Background(), ca.client, ns, "vm-2", tok, time.Now())
		wantCode(t, err, codes.PermissionDenied, "expired")
	})

	t.Run("revoked, then joined again", func(t *testing.T) {
		o, code := meshid(t, "", "workload", "revoke", "vm-1", "-n", ns, "--kubeconfig", need(t).cluster.Kubeconfig)
		if code != 0 || !strings.Contains(o, "stays valid for") {
			t.Fatalf("meshid workload revoke: exit %d\n%s", code, o)
		}
		series := `meshid_ca_external_refused_total{method="renew",reason="certificate_not_issued_to_it"}`
		before := ca.metric(t, series)
		eventually(t, 2*ttl, func() error {
			if v := ca.metric(t, series); v <= before {
				return fmt.Errorf("%s = %v", series, v)
			}
			return nil
		})
		joins := ca.metric(t, `meshid_ca_external_certificates_issued_total{method="join"}`)
		j3 := joinToken(t, ca, ns, "vm-1")
		writeFile(t, tokenFile, j3.Token) // mode 0644: the proxy warns
		eventually(t, 2*ttl, func() error {
			if v := ca.metric(t, `meshid_ca_external_certificates_issued_total{method="join"}`); v <= joins {
				return fmt.Errorf("no new join (%v)", v)
			}
			return nil
		})
		if !strings.Contains(ext.logs(t), "the join token file is readable by other users") {
			t.Error("no warning about a join token file others can read")
		}
	})

	t.Run("deleted: renewals refused, then cut off", func(t *testing.T) {
		if o, err := kubectl(t, "", "delete", "externalworkload", "vm-1", "-n", ns); err != nil {
			t.Fatalf("delete: %v\n%s", err, o)
		}
		deleted := time.Now()
		// The certificate the proxy holds, from its state dir, is refused.
		held, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "svid.pem"), filepath.Join(stateDir, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := rotation.DialCA(ca.addr, ca.bundle.X509Bundle(trustDomain), ca.id(t), rotation.WithClientCertificate(&held))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = rotation.RenewExternal(context.Background(), identityv1.NewIdentityClient(conn), "vm-1", time.Now())
		wantCode(t, err, codes.PermissionDenied, "does not exist")
		eventually(t, 2*ttl, func() error {
			if _, err := get(fresh, out, "after delete"); err == nil {
				return fmt.Errorf("vm-1 still reaches db %s after its deletion", time.Since(deleted).Round(time.Second))
			}
			return nil
		})
		// Renewals changed vm-1's status many times; the slice was written
		// once (an unchanged slice is not updated again).
		// (Other tests' CAs publish the slices of every namespace too: only
		// this namespace's line is counted.)
		if n := strings.Count(ca.logs(t), `"msg":"EndpointSlice of an ExternalWorkload published","endpointslice":"`+ns+`/vm.vm-1"`); n != 1 {
			t.Errorf("the slice was written %d times; want once", n)
		}
		if o, err := kubectl(t, "", "get", "endpointslice", "-n", ns, "-l", "meshid.dev/external-workload=vm-1", "-o", "name"); err != nil || o != "" {
			t.Fatalf("EndpointSlices of the deleted vm-1: %q, %v", o, err)
		}
		if v := ca.metric(t, `meshid_ca_external_refused_total{method="renew",reason="external_workload_gone"}`); v < 1 {
			t.Fatalf("refused renewals after delete: %v", v)
		}
		t.Logf("cut off %s after the deletion (leaf TTL %s)", time.Since(deleted).Round(100*time.Millisecond), ttl)
	})
}

// TestInstalledExternalRBAC: meshid-ca, run with a real token of the
// service account `meshid install --external-workloads` renders, under its
// RBAC and admission policies, joins and renews an ExternalWorkload and
// publishes its EndpointSlice; the same account is refused an EndpointSlice
// that is not an ExternalWorkload's (by the policy) and deleting or
// changing an ExternalWorkload (by RBAC).
//
// Not parallel: its CA publishes the slices of every namespace, and would
// race TestExternalWorkload's over that test's slice.
func TestInstalledExternalRBAC(t *testing.T) {
	need(t)
	ctx := context.Background()
	ns := "meshid-rbac-ext"
	dir := t.TempDir()
	anchor := newAnchor(t, "rbac-ext anchor")
	iss := newIssuer(t, anchor, "rbac-ext issuer")
	key, _ := iss.KeyPEM()
	for name, data := range map[string][]byte{"anchor.crt": anchor.CertPEM(), "issuer.crt": iss.CertPEM(), "issuer.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rendered, code := meshid(t, "", "install", "-n", ns, "--image", "example.invalid/meshid-ca:test", "--webhook=false", "--external-workloads",
		"--anchor-cert", filepath.Join(dir, "anchor.crt"), "--issuer-cert", filepath.Join(dir, "issuer.crt"), "--issuer-key", filepath.Join(dir, "issuer.key"))
	if code != 0 {
		t.Fatalf("install: %s", rendered)
	}
	objects := renderedKinds(t, rendered, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "Secret", "CustomResourceDefinition")
	if out, err := kubectl(t, objects, "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := kubectl(t, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/externalworkloads.meshid.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	caKubeconfig := saKubeconfig(t, ns, "meshid-ca")
	addr, admin := freeAddr(t), freeAddr(t)
	caProc := startProcess(t, "meshid-ca", admin, "--kubeconfig", caKubeconfig, "--namespace", ns,
		"--issuer-secret", "meshid-issuer", "--trust-bundle", "meshid-trust-bundle", "--listen", addr, "--admin-listen", admin,
		"--external-workloads", "--external-leaf-ttl", "1m", "--fleet-report-interval", "-1s")
	ca := &caProcess{process: caProc, ns: ns, anchor: anchor, issuer: iss, addr: addr}
	b, err := bundle.Parse(anchor.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	ca.bundle = b
	conn, err := rotation.DialCA(addr, b.X509Bundle(trustDomain), ca.id(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ca.client = identityv1.NewIdentityClient(conn)

	wns := namespace(t, "ext-rbac")
	serviceAccount(t, wns, "vm")
	obj := fmt.Sprintf("apiVersion: meshid.dev/v1alpha1\nkind: ExternalWorkload\nmetadata:\n  name: vm-1\n  namespace: %[1]s\n  labels: {app: vm-1}\nspec:\n  serviceAccount: vm\n  addresses: [192.0.2.20]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vm\n  namespace: %[1]s\nspec:\n  selector: {app: vm-1}\n  ports:\n  - port: 443\n    targetPort: 8443\n", wns)
	if out, err := kubectl(t, obj, "apply", "-f", "-"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	j := joinToken(t, ca, wns, "vm-1")
	got, err := rotation.JoinExternal(ctx, ca.client, wns, "vm-1", j.Token, time.Now())
	if err != nil {
		t.Fatalf("join under the rendered RBAC: %v\n%s", err, caProc.logs(t))
	}
	renewConn, err := rotation.DialCA(addr, b.X509Bundle(trustDomain), ca.id(t), rotation.WithClientCertificate(got.Certificate()))
	if err != nil {
		t.Fatal(err)
	}
	defer renewConn.Close()
	if _, err := rotation.RenewExternal(ctx, identityv1.NewIdentityClient(renewConn), "vm-1", time.Now()); err != nil {
		t.Fatalf("renew under the rendered RBAC: %v", err)
	}
	eventually(t, 10*time.Second, func() error {
		o, err := kubectl(t, "", "get", "endpointslice", "vm.vm-1", "-n", wns, "-o", "jsonpath={.endpoints[0].addresses[0]}")
		if err != nil || o != "192.0.2.20" {
			return fmt.Errorf("EndpointSlice vm.vm-1: %q, %v", o, err)
		}
		return nil
	})

	caSA := saClient(t, ns, "meshid-ca")
	foreign := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "not-ours", Namespace: wns, Labels: map[string]string{discoveryv1.LabelServiceName: "vm"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	eventually(t, 10*time.Second, func() error { // the policy takes a moment to load
		_, err := caSA.DiscoveryV1().EndpointSlices(wns).Create(ctx, foreign, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), manifest.CAExternalWritesPolicy(ns)) {
			return fmt.Errorf("an EndpointSlice not an ExternalWorkload's: %v; want refused by %s", err, manifest.CAExternalWritesPolicy(ns))
		}
		return nil
	})
	dyn, err := dynamic.NewForConfig(restConfig(t, caKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(v1alpha1.Resource).Namespace(wns)
	if err := res.Delete(ctx, "vm-1", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("meshid-ca deleting an ExternalWorkload: %v; want forbidden", err)
	}
	u, err := res.Get(ctx, "vm-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Update(ctx, u, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("meshid-ca updating an ExternalWorkload's spec: %v; want forbidden", err)
	}
	if logs := caProc.logs(t); strings.Contains(logs, "forbidden") {
		t.Fatalf("meshid-ca was refused something it needs:\n%s", logs)
	}
}

func restConfig(t *testing.T, kubeconfig string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
