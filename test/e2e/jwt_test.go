package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca/jwtkey"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/rotation"
)

// kid is the key ID in a JWT's header.
func kid(t *testing.T, token string) string {
	t.Helper()
	tok, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Signatures[0].Header.KeyID
}

// jwksKeyIDs are the key IDs of a replica's published JWKS (GetBundle).
func jwksKeyIDs(t *testing.T, client identityv1.IdentityClient) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := client.GetBundle(ctx, &identityv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if len(b.GetJwtAuthorities()) > 0 {
		if err := json.Unmarshal(b.GetJwtAuthorities(), &set); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, k := range set.Keys {
		ids = append(ids, k.KeyID)
	}
	slices.Sort(ids)
	return ids
}

// TestJWTSVIDs: a workload's go-spiffe client gets a JWT-SVID for vault
// from its proxy's Workload API (the proxy obtains it from meshid-ca with
// its X.509-SVID) and validates it against FetchJWTBundles, not for
// another audience; go-oidc discovers the issuer from meshid-ca's OIDC
// listener and verifies JWT-SVIDs as a cloud provider would, on both
// sides of a signing-key rotation; a second replica signs with and
// publishes the same keys, from the Secret the first created.
func TestJWTSVIDs(t *testing.T) {
	t.Parallel()
	oidcAddr := freeAddr(t)
	issuer := "http://" + oidcAddr
	// Keys sign for 40 s, their successor published 15 s before.
	jwtArgs := []string{"--jwt-key-secret", "meshid-jwt-keys", "--jwt-key-lifetime", "40s", "--jwt-key-publish-lead", "15s", "--jwt-ttl-max", "2m", "--oidc-issuer", issuer}
	fedAddr := freeAddr(t)
	ca := startCA(t, append(slices.Clone(jwtArgs), "--oidc-listen", oidcAddr, "--fleet-report-interval", "200ms", "--replica", "ca-0", "--federation-listen", fedAddr)...)
	ns := namespace(t, "jwt")
	serviceAccount(t, ns, "web")
	webID := "spiffe://cluster.local/ns/" + ns + "/sa/web"
	socket := filepath.Join(t.TempDir(), "workload.sock")
	startProxy(t, ca, ns, "web", "--workload-api", "unix://"+socket)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	fetch := func(aud string, extra ...string) (*jwtsvid.SVID, error) {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return client.FetchJWTSVID(fctx, jwtsvid.Params{Audience: aud, ExtraAudiences: extra})
	}

	var first *jwtsvid.SVID
	eventually(t, 30*time.Second, func() error {
		first, err = fetch("vault")
		return err
	})
	if first.ID.String() != webID {
		t.Fatalf("JWT-SVID for %s; want %s", first.ID, webID)
	}

	t.Run("go-spiffe validates against FetchJWTBundles", func(t *testing.T) {
		bundles, err := client.FetchJWTBundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(first.Marshal(), bundles, []string{"vault"}); err != nil {
			t.Fatalf("validate for vault: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(first.Marshal(), bundles, []string{"s3"}); err == nil {
			t.Fatal("validated for another audience")
		}
		if _, err := client.ValidateJWTSVID(ctx, first.Marshal(), "vault"); err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
	})

	t.Run("refused requests", func(t *testing.T) {
		if _, err := fetch("*"); err == nil || !strings.Contains(err.Error(), "no wildcard") {
			t.Fatalf("audience *: %v", err)
		}
		if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "vault", Subject: spiffeid.RequireFromString("spiffe://cluster.local/ns/" + ns + "/sa/db")}); err == nil {
			t.Fatal("a JWT-SVID for another workload's sub")
		}
	})

	t.Run("the CA created the key Secret", func(t *testing.T) {
		sec, err := need(t).client.CoreV1().Secrets(ca.ns).Get(ctx, "meshid-jwt-keys", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := jwtkey.Unmarshal(sec.Data[jwtkey.DataKey])
		if err != nil || len(keys) == 0 || !slices.ContainsFunc(keys, func(k jwtkey.Key) bool { return k.ID == kid(t, first.Marshal()) }) {
			t.Fatalf("the Secret holds %d keys (%v), not the one that signed", len(keys), err)
		}
	})

	t.Run("meshid check rows", func(t *testing.T) {
		signing := kid(t, first.Marshal())
		eventually(t, 10*time.Second, func() error {
			out, _ := meshid(t, "", "check", "--kubeconfig", need(t).cluster.Kubeconfig, "-n", ca.ns, "--deployment", "")
			if !strings.Contains(checkRow(out, "jwt keys published by replica ca-0"), "signs with "+signing) {
				return fmt.Errorf("no replica row yet:\n%s", out)
			}
			wantRow(t, out, "jwt keys published by replica ca-0", "OK", "signs with "+signing)
			// 40 s keys: the successor may not be published yet (a warning).
			if line := checkRow(out, "jwt keys "+ca.ns+"/meshid-jwt-keys"); !strings.Contains(line, "key "+signing+" signs") || strings.Contains(line, "FAIL") {
				t.Fatalf("key Secret row %q:\n%s", line, out)
			}
			return nil
		})
	})

	t.Run("the federation bundle carries the JWT keys", func(t *testing.T) {
		fed, err := federation.FetchBundle(ctx, trustDomain, "https://"+fedAddr, federation.WithSPIFFEAuth(ca.bundle.X509Bundle(trustDomain), ca.id(t)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(first.Marshal(), jwtbundle.FromJWTAuthorities(trustDomain, fed.JWTAuthorities()), []string{"vault"}); err != nil {
			t.Fatalf("a federated peer cannot validate the JWT-SVID with the bundle endpoint's keys: %v", err)
		}
	})

	t.Run("OIDC discovery has caching headers", func(t *testing.T) {
		for _, path := range []string{"/.well-known/openid-configuration", "/keys"} {
			resp, err := http.Get(issuer + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") || resp.Header.Get("ETag") == "" {
				t.Fatalf("%s: %d, Cache-Control %q, ETag %q", path, resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"))
			}
		}
	})

	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery of %s: %v", issuer, err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: "vault"})
	t.Run("go-oidc verifies a JWT-SVID", func(t *testing.T) {
		tok, err := verifier.Verify(ctx, first.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if tok.Subject != webID || tok.Issuer != issuer {
			t.Fatalf("sub %s iss %s", tok.Subject, tok.Issuer)
		}
		if _, err := provider.Verifier(&oidc.Config{ClientID: "s3"}).Verify(ctx, first.Marshal()); err == nil {
			t.Fatal("go-oidc verified it for another audience")
		}
	})

	t.Run("a second replica uses the same keys", func(t *testing.T) {
		addr, _ := runCA(t, ca.ns, jwtArgs...)
		conn, err := rotation.DialCA(addr, ca.bundle.X509Bundle(trustDomain), ca.id(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		second := identityv1.NewIdentityClient(conn)
		eventually(t, 20*time.Second, func() error {
			a, b := jwksKeyIDs(t, ca.client), jwksKeyIDs(t, second)
			if len(a) == 0 || !slices.Equal(a, b) {
				return fmt.Errorf("replicas publish %v and %v", a, b)
			}
			return nil
		})
	})

	t.Run("across a key rotation", func(t *testing.T) {
		// A fresh audience set each time, so the proxy's cache does not
		// answer.
		var after *jwtsvid.SVID
		n := 0
		eventually(t, 70*time.Second, func() error {
			n++
			s, err := fetch("vault", fmt.Sprint("rotation-", n))
			if err != nil {
				return err
			}
			if kid(t, s.Marshal()) == kid(t, first.Marshal()) {
				return fmt.Errorf("still signed by %s", kid(t, first.Marshal()))
			}
			after = s
			return nil
		})
		for name, s := range map[string]*jwtsvid.SVID{"before": first, "after": after} {
			if _, err := verifier.Verify(ctx, s.Marshal()); err != nil {
				t.Errorf("go-oidc, the JWT-SVID from %s the rotation: %v", name, err)
			}
		}
		bundles, err := client.FetchJWTBundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string]*jwtsvid.SVID{"before": first, "after": after} {
			if _, err := jwtsvid.ParseAndValidate(s.Marshal(), bundles, []string{"vault"}); err != nil {
				t.Errorf("go-spiffe, the JWT-SVID from %s the rotation: %v", name, err)
			}
		}
	})

	if v := ca.metric(t, "meshid_ca_jwt_svids_issued_total"); v < 2 {
		t.Errorf("meshid_ca_jwt_svids_issued_total = %v", v)
	}
}

// TestJWTKeySecretRBAC: meshid-ca, run with a real token of the service
// account `meshid install --jwt-svids` renders and under its RBAC, creates
// the key Secret by server-side apply (a create RBAC can name), fills it
// and mints; it may not read, list, create or change any other Secret.
func TestJWTKeySecretRBAC(t *testing.T) {
	t.Parallel()
	e := need(t)
	ctx := context.Background()
	ns := "meshid-jwt-rbac"
	dir := t.TempDir()
	anchor := newAnchor(t, "jwt rbac anchor")
	iss := newIssuer(t, anchor, "jwt rbac issuer")
	key, _ := iss.KeyPEM()
	for name, data := range map[string][]byte{"anchor.crt": anchor.CertPEM(), "issuer.crt": iss.CertPEM(), "issuer.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rendered, code := meshid(t, "", "install", "-n", ns, "--image", "example.invalid/meshid-ca:test", "--webhook=false", "--jwt-svids", "--jwt-ttl-max", "10m", "--oidc-issuer", "https://oidc.example.com/jwt-rbac",
		"--anchor-cert", filepath.Join(dir, "anchor.crt"), "--issuer-cert", filepath.Join(dir, "issuer.crt"), "--issuer-key", filepath.Join(dir, "issuer.key"))
	if code != 0 {
		t.Fatalf("install: %s", rendered)
	}
	objects := renderedKinds(t, rendered, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "Secret")
	if out, err := kubectl(t, objects, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = e.client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := e.client.CoreV1().Secrets(ns).Get(ctx, manifest.JWTKeySecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("install rendered the key Secret (%v); meshid-ca makes it", err)
	}
	addr, admin, oidcAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	// The rendered flags, but this test's ports (later flags win).
	caArgs := append(deploymentArgs(t, rendered), "--kubeconfig", saKubeconfig(t, ns, manifest.CAName), "--listen", addr, "--admin-listen", admin, "--replica", "jwt-0", "--oidc-listen", oidcAddr)
	if !slices.Contains(caArgs, "--jwt-key-secret="+manifest.JWTKeySecret) || !slices.Contains(caArgs, "--jwt-ttl-max=10m0s") {
		t.Fatalf("the Deployment runs meshid-ca without the JWT flags: %v", caArgs)
	}
	ca := startProcess(t, "meshid-ca", admin, caArgs...)
	eventually(t, 30*time.Second, func() error {
		sec, err := e.client.CoreV1().Secrets(ns).Get(ctx, manifest.JWTKeySecret, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if keys, err := jwtkey.Unmarshal(sec.Data[jwtkey.DataKey]); err != nil || len(keys) == 0 {
			return fmt.Errorf("no keys in the Secret yet (%v)", err)
		}
		return nil
	})
	if logs := ca.logs(t); strings.Contains(logs, "forbidden") {
		t.Fatalf("meshid-ca was refused something:\n%s", logs)
	}
	// The OIDC listener of the rendered --oidc-issuer, below its path.
	eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + oidcAddr + "/jwt-rbac/.well-known/openid-configuration")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Issuer != "https://oidc.example.com/jwt-rbac" || doc.JWKSURI != doc.Issuer+"/keys" {
			return fmt.Errorf("discovery document %+v (%v)", doc, err)
		}
		return nil
	})
	caSA := saClient(t, ns, manifest.CAName)
	dryRun := []string{metav1.DryRunAll}
	byRBAC := func(err error) bool { return apierrors.IsForbidden(err) && strings.Contains(err.Error(), " cannot ") }
	// A replica that applies after another created it: a named patch.
	if _, err := caSA.CoreV1().Secrets(ns).Apply(ctx, corev1ac.Secret(manifest.JWTKeySecret, ns).WithType(corev1.SecretTypeOpaque),
		metav1.ApplyOptions{FieldManager: "meshid-ca", DryRun: dryRun}); err != nil {
		t.Fatalf("apply of the existing key Secret: %v", err)
	}
	for name, call := range map[string]func() error{
		"get the issuer": func() error {
			_, err := caSA.CoreV1().Secrets(ns).Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
			return err
		},
		"list secrets": func() error {
			_, err := caSA.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		},
		"create another by apply": func() error {
			_, err := caSA.CoreV1().Secrets(ns).Apply(ctx, corev1ac.Secret("other", ns), metav1.ApplyOptions{FieldManager: "meshid-ca", DryRun: dryRun})
			return err
		},
		"create another": func() error {
			_, err := caSA.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{DryRun: dryRun})
			return err
		},
		"delete the key Secret": func() error {
			return caSA.CoreV1().Secrets(ns).Delete(ctx, manifest.JWTKeySecret, metav1.DeleteOptions{DryRun: dryRun})
		},
	} {
		if err := call(); !byRBAC(err) {
			t.Errorf("%s: %v; want refused by RBAC", name, err)
		}
	}
}
