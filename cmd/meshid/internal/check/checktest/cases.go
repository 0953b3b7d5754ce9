package checktest

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

// Case is one state of the World and what check must print for it.
type Case struct {
	Name string
	// Mod changes the healthy World.
	Mod func(t testing.TB, w *World)
	// Want are rows (Row) and hints (Hint) the output must hold.
	Want []*regexp.Regexp
	// Hints are rows whose hint must be printed.
	Hints []string
	// Absent must not be printed at all.
	Absent []string
	// Problem: check exits 1.
	Problem bool
}

// Now is when the Cases happen.
var Now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func forbidden(resource, name string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name, errors.New("RBAC says no"))
}

// refuse makes get of resource (named name, or any) fail with err.
func refuse(w *World, resource, name string, err error) {
	prev := w.React
	w.React = func(c *fake.Clientset) {
		if prev != nil {
			prev(c)
		}
		c.PrependReactor("get", resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if name != "" && a.(k8stesting.GetAction).GetName() != name {
				return false, nil, nil
			}
			return true, nil, err
		})
	}
}

// noReports makes the World one where no replica reports.
func noReports(_ testing.TB, w *World) { w.Replicas = nil }

// certManager makes the issuer cert-manager's, as `meshid install
// --cert-manager` renders it; issuerReady and certReady are the Ready
// conditions' status ("" for none), anchorSecret whether the CA Issuer's
// Secret exists (holding anchor).
func certManager(w *World, issuerReady, certReady string, anchor *issuer.KeyPair) {
	cond := func(status, reason, msg string) map[string]any {
		if status == "" {
			return map[string]any{}
		}
		return map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": status, "reason": reason, "message": msg}}}
	}
	issuerCond, certCond := cond(issuerReady, "KeyPairVerified", "Signing CA verified"), cond(certReady, "Ready", "Certificate is up to date and has not expired")
	if issuerReady == "False" {
		issuerCond = cond("False", "ErrGetKeyPair", `Error getting keypair for CA issuer: secrets "meshid-anchor" not found`)
	}
	if certReady == "False" {
		certCond = cond("False", "DoesNotExist", "Issuing certificate as Secret does not exist")
	}
	w.Dynamic = append(w.Dynamic,
		&unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
			"metadata": map[string]any{"namespace": NS, "name": manifest.AnchorIssuer},
			"spec":     map[string]any{"ca": map[string]any{"secretName": manifest.AnchorSecret}},
			"status":   issuerCond,
		}},
		&unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
			"metadata": map[string]any{"namespace": NS, "name": manifest.IssuerSecret},
			"spec": map[string]any{"secretName": manifest.IssuerSecret, "renewBefore": "25h0m0s",
				"issuerRef": map[string]any{"name": manifest.AnchorIssuer, "kind": "Issuer", "group": "cert-manager.io"}},
			"status": certCond,
		}},
	)
	if anchor != nil {
		key, _ := anchor.KeyPEM()
		s := Secret(manifest.AnchorSecret, anchor.CertPEM())
		s.Data["tls.key"] = key
		w.Objects = append(w.Objects, s)
	}
}

// Cases are every row check prints, one state of the World each.
func Cases() []Case {
	return []Case{
		{
			Name: "healthy",
			Want: []*regexp.Regexp{
				Row("api server", health.OK, "reachable, Kubernetes v1.34.4"),
				Row("namespace meshid", health.OK, "exists"),
				Row("rbac", health.OK, User+" may make the 7 reads check makes"),
				Row(BundleRow, health.OK, "in force on 2 of 2 replicas: 1 anchor(s), sha256 "),
				Row("anchor 0 anchor", health.OK, "CA, valid for 364d more; used by the issuer in force"),
				Row(IssuerRow, health.OK, "in force on 2 of 2 replicas: CN=issuer,O=meshid, sha256 "),
				Row(CARow, health.OK, "2 of 2 ready"),
				Row(ReportsRow, health.OK, "2 replica(s) report (meshid-ca-a, meshid-ca-b), the latest 2s ago"),
				Row("proxies", health.OK, "no proxy reports to the CA replicas"),
			},
			Absent: []string{"webhook CA", "webhook certificate", "\nproxy ", "hint:", "update", "cert-manager"},
		},

		// Preflight.
		{
			Name: "API server unreachable",
			Mod: func(_ testing.TB, w *World) {
				//lint:ignore ST1005 the text of client-go's own error, as the real API server gives it
				refuse(w, "namespaces", "", errors.New(`Get "https://127.0.0.1:1/api/v1/namespaces/meshid": dial tcp 127.0.0.1:1: connect: connection refused`))
			},
			Want: []*regexp.Regexp{
				Row("api server", health.Fail, "cannot reach the API server: Get "),
				Hint("api server", "`kubectl cluster-info`"),
				Row("namespace meshid", health.Skip, "skipped: the API server cannot be reached"),
				Row("rbac", health.Skip, "skipped: the API server cannot be reached"),
				Row(BundleRow, health.Skip, "skipped: the API server cannot be reached"),
				Row(IssuerRow, health.Skip, "skipped: the API server cannot be reached"),
				Row(CARow, health.Skip, "skipped"),
				Row(ReportsRow, health.Skip, "skipped"),
				regexp.MustCompile(`(?m)^Time to outage: unknown: the cluster could not be read$`),
			},
			Hints:   []string{"api server"},
			Absent:  []string{"meshid install", "hint: bundle", "hint: issuer", "hint: namespace"},
			Problem: true,
		},
		{
			Name: "API server refuses the credentials",
			Mod: func(_ testing.TB, w *World) {
				refuse(w, "namespaces", "", apierrors.NewUnauthorized("Unauthorized"))
			},
			Want:    []*regexp.Regexp{Row("api server", health.Fail, "the API server refuses check's credentials: Unauthorized"), Row("rbac", health.Skip, "")},
			Hints:   []string{"api server"},
			Absent:  []string{"meshid install"},
			Problem: true,
		},
		{
			Name: "namespace missing",
			Mod:  func(_ testing.TB, w *World) { w.NoNamespace = true },
			Want: []*regexp.Regexp{
				Row("api server", health.OK, "reachable"),
				Row("namespace meshid", health.Fail, "not found"),
				Hint("namespace meshid", "`meshid install --apply -n meshid`"),
				Row("rbac", health.Skip, "skipped: namespace meshid does not exist"),
				Row(BundleRow, health.Skip, "skipped: namespace meshid does not exist"),
				Row(IssuerRow, health.Skip, "skipped: namespace meshid does not exist"),
			},
			Hints:   []string{"namespace meshid"},
			Absent:  []string{"hint: bundle", "hint: issuer", "hint: ca", "hint: rbac"},
			Problem: true,
		},
		{
			Name: "namespace cannot be read",
			Mod:  func(_ testing.TB, w *World) { refuse(w, "namespaces", "", forbidden("namespaces", NS)) },
			Want: []*regexp.Regexp{Row("namespace meshid", health.Skip, "cannot tell whether it exists: "), Row(IssuerRow, health.OK, "in force")},
		},
		{
			Name: "forbidden: no read allowed",
			Mod: func(_ testing.TB, w *World) {
				refuse(w, "namespaces", "", forbidden("namespaces", NS))
				w.As = "system:serviceaccount:meshid:nobody"
				w.Denied = map[string]bool{}
				for _, a := range []string{"get configmaps meshid-trust-bundle", "get secrets meshid-issuer", "list configmaps", "get deployments.apps meshid-ca",
					"get secrets meshid-webhook-ca", "get secrets meshid-webhook-tls", "get mutatingwebhookconfigurations.admissionregistration.k8s.io meshid-injector"} {
					w.Denied[a] = true
				}
			},
			Want: []*regexp.Regexp{
				Row("namespace meshid", health.Skip, "cannot tell whether it exists"),
				Row("rbac", health.Fail, "system:serviceaccount:meshid:nobody may not get configmaps meshid-trust-bundle, get secrets meshid-issuer, list configmaps, get deployments.apps meshid-ca"),
				Hint("rbac", "`kubectl -n meshid create role meshid-check --verb=get,list --resource=configmaps,deployments.apps,secrets` and `kubectl -n meshid create rolebinding meshid-check --role=meshid-check --serviceaccount=meshid:nobody`"),
				Hint("rbac", "`kubectl create clusterrole meshid-check --verb=get --resource=mutatingwebhookconfigurations.admissionregistration.k8s.io`"),
				Row(BundleRow, health.Skip, "skipped: not allowed to get configmaps meshid-trust-bundle (see rbac)"),
				Row(IssuerRow, health.Skip, "skipped: not allowed to get secrets meshid-issuer (see rbac)"),
				Row(CARow, health.Skip, "skipped: not allowed to get deployments.apps meshid-ca (see rbac)"),
				Row(ReportsRow, health.Skip, "skipped: not allowed to list configmaps (see rbac)"),
			},
			Hints:   []string{"rbac"},
			Absent:  []string{"meshid install", "hint: bundle", "hint: issuer", "hint: ca"},
			Problem: true,
		},
		{
			Name: "forbidden: an optional read",
			Mod:  func(_ testing.TB, w *World) { w.Denied = map[string]bool{"get deployments.apps meshid-ca": true} },
			Want: []*regexp.Regexp{
				Row("rbac", health.Warn, User+" may not get deployments.apps meshid-ca: the rows that need them are skipped"),
				Hint("rbac", "--user=jane@example.com"),
				Row(CARow, health.Skip, "skipped: not allowed to get deployments.apps meshid-ca (see rbac)"),
				Row(IssuerRow, health.OK, "in force"),
			},
			Hints: []string{"rbac"},
		},

		// The bundle: what the replicas hold, and what the ConfigMap holds.
		{
			Name: "bundle ConfigMap deleted: the replicas keep theirs",
			Mod: func(_ testing.TB, w *World) {
				w.Bundle = nil
				w.Updates = []fleet.Update{{Material: "bundle", Source: "ConfigMap meshid/meshid-trust-bundle", Status: fleet.UpdateGone,
					Reason: "source: *v1.ConfigMap meshid/meshid-trust-bundle was deleted; the last good bundle stays in force until it is recreated", Since: Now.Add(-10 * time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(BundleRow, health.OK, "in force on 2 of 2 replicas: 1 anchor(s)"),
				Row("anchor 0", health.OK, "used by the issuer in force"),
				Row(BundleUpdateRow, health.Fail, "ConfigMap meshid/meshid-trust-bundle: ConfigMap not found; lost by 2 of 2 replicas since 2030-06-01T11:50:00Z: source: "),
				Hint(BundleUpdateRow, "`kubectl -n meshid create configmap meshid-trust-bundle --from-file=ca-bundle.crt=anchors.pem --dry-run=client -o yaml | kubectl -n meshid apply -f -`"),
			},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle ConfigMap unreadable",
			Mod: func(_ testing.TB, w *World) {
				refuse(w, "configmaps", manifest.BundleConfigMap, forbidden("configmaps", manifest.BundleConfigMap))
			},
			Want:    []*regexp.Regexp{Row(BundleRow, health.OK, "in force"), Row(BundleUpdateRow, health.Fail, "ConfigMap meshid/meshid-trust-bundle: cannot read the ConfigMap: ")},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle ConfigMap without its key",
			Mod: func(_ testing.TB, w *World) {
				w.Bundle.Data = map[string]string{"bundle.pem": string(w.Anchor.CertPEM())}
			},
			Want:    []*regexp.Regexp{Row(BundleUpdateRow, health.Fail, "the ConfigMap has no key ca-bundle.crt")},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle does not parse: refused, the last good one in force",
			Mod: func(_ testing.TB, w *World) {
				w.Bundle.Data[bundle.Key] = "not PEM"
				w.Updates = []fleet.Update{{Material: "bundle", Source: "ConfigMap meshid/meshid-trust-bundle", Status: fleet.UpdateRefused, Reason: "bundle: no PEM CERTIFICATE block found", Since: Now.Add(-time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(BundleRow, health.OK, "in force"),
				Row(BundleUpdateRow, health.Fail, "refused by 2 of 2 replicas since 2030-06-01T11:59:00Z: bundle: no PEM CERTIFICATE block found; meshid-ca keeps bundle "),
				Hint(BundleUpdateRow, "`kubectl -n meshid edit configmap meshid-trust-bundle`"),
			},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle that drops the issuer's anchor is held back",
			Mod: func(t testing.TB, w *World) {
				stranger := pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year)
				w.Bundle.Data[bundle.Key] = string(stranger.CertPEM())
				w.Updates = []fleet.Update{{Material: "bundle", Source: "ConfigMap meshid/meshid-trust-bundle", Status: fleet.UpdateHeldBack,
					Reason: "trust: bundle 5e2f does not hold the anchor of the issuer in use; it is held back", Since: Now.Add(-time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(BundleUpdateRow, health.Fail, "not the bundle in force; held back by 2 of 2 replicas since"),
				Hint(BundleUpdateRow, "`meshid rotate-anchor start --generate --write-anchor-key new-anchor.key -n meshid`"),
			},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle that would drop the issuer's anchor, not yet seen by the replicas",
			Mod: func(t testing.TB, w *World) {
				w.Bundle.Data[bundle.Key] = string(pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year).CertPEM())
			},
			Want:    []*regexp.Regexp{Row(BundleUpdateRow, health.Fail, "meshid-ca will not take it: it does not hold anchor ")},
			Hints:   []string{BundleUpdateRow},
			Problem: true,
		},
		{
			Name: "bundle with a new anchor, not loaded yet",
			Mod: func(t testing.TB, w *World) {
				w.Bundle.Data[bundle.Key] += string(pkitest.CA(t, nil, "next", w.Now.Add(-time.Hour), Year).CertPEM())
			},
			Want:  []*regexp.Regexp{Row(BundleUpdateRow, health.Warn, "holds 2 anchor(s) (sha256 "), Row(BundleUpdateRow, health.Warn, "not the bundle in force; meshid-ca keeps bundle "), Row(BundleUpdateRow, health.Warn, ": not loaded yet")},
			Hints: []string{BundleUpdateRow},
		},
		{
			Name: "replicas hold different bundles",
			Mod: func(_ testing.TB, w *World) {
				w.Report = func(r *fleet.Report) {
					if r.Replica == "meshid-ca-b" {
						r.BundleSHA256 = strings.Repeat("ab", 32)
					}
				}
			},
			Want:  []*regexp.Regexp{Row(BundleRow, health.Warn, "the replicas hold different bundles: ")},
			Hints: []string{BundleRow},
		},
		{
			Name: "a replica with no bundle",
			Mod: func(_ testing.TB, w *World) {
				w.Report = func(r *fleet.Report) {
					if r.Replica == "meshid-ca-b" {
						r.BundleSHA256, r.Anchors = "", nil
					}
				}
			},
			Want:    []*regexp.Regexp{Row(BundleRow, health.Fail, "replica meshid-ca-b has no bundle in force: it cannot sign")},
			Hints:   []string{BundleRow},
			Problem: true,
		},

		// Anchors.
		{
			Name: "stale extra anchor: expired, nothing uses it",
			Mod: func(t testing.TB, w *World) {
				old := pkitest.CA(t, nil, "old", w.Now.Add(-2*Year), Year)
				w.Bundle.Data[bundle.Key] += string(old.CertPEM())
				w.InForceAnchors = []*x509Cert{w.Anchor.Cert, old.Cert}
			},
			Want: []*regexp.Regexp{
				Row("anchor 1 old", health.Fail, "expired at 2029-06-01T12:00:00Z; nothing uses it (the issuer chains to anchor "),
				Row("anchor 1 old", health.Fail, "; no reported proxy's certificate chains to it), so no traffic depends on it"),
				Hint("anchor 1 old", "remove it from the bundle: `kubectl -n meshid edit configmap meshid-trust-bundle` and delete the certificate whose SHA-256 is "),
				regexp.MustCompile(`(?m)^Time to outage: 47h00m \(issuer meshid/meshid-issuer in force, at`),
			},
			Hints:   []string{"anchor 1 old"},
			Absent:  []string{"--emergency", "nothing it signed verifies"},
			Problem: true,
		},
		{
			Name: "expired anchor the issuer in force chains to",
			Mod: func(t testing.TB, w *World) {
				old := pkitest.CA(t, nil, "old", w.Now.Add(-2*Year), Year)
				w.Bundle.Data[bundle.Key] = string(old.CertPEM())
				w.InForceAnchors = []*x509Cert{old.Cert}
				w.Report = func(r *fleet.Report) {
					r.Issuer.AnchorSHA256, r.Issuer.ChainNotAfter = bundle.Fingerprint(old.Cert), old.Cert.NotAfter
				}
			},
			Want: []*regexp.Regexp{
				Row("anchor 0 old", health.Fail, "expired at 2029-06-01T12:00:00Z; used by the issuer in force: nothing it signed verifies any more"),
				Hint("anchor 0 old", "`meshid rotate-anchor start --emergency --generate --write-anchor-key new-anchor.key -n meshid`"),
				Row(IssuerRow, health.Fail, "its chain expired at 2029-06-01T12:00:00Z"),
			},
			Hints:   []string{"anchor 0 old", IssuerRow},
			Problem: true,
		},
		{
			Name: "expired anchor a reported proxy's certificate chains to",
			Mod: func(t testing.TB, w *World) {
				old := pkitest.CA(t, nil, "old", w.Now.Add(-2*Year), Year)
				w.Bundle.Data[bundle.Key] += string(old.CertPEM())
				w.InForceAnchors = []*x509Cert{w.Anchor.Cert, old.Cert}
				p := w.Reported(t, Web, "0000000000000001")
				p.LeafAnchorSHA256, p.BundleSHA256 = bundle.Fingerprint(old.Cert), ""
				w.Fleet = []fleet.Proxy{p}
			},
			Want:    []*regexp.Regexp{Row("anchor 1 old", health.Fail, "used by 1 reported proxies' certificates: nothing it signed verifies any more")},
			Hints:   []string{"anchor 1 old"},
			Problem: true,
		},
		{
			Name: "two anchors during a rotation are told apart by fingerprint",
			Mod: func(t testing.TB, w *World) {
				next := pkitest.CA(t, nil, "anchor", w.Now.Add(-time.Hour), 2*Year)
				w.Bundle.Data[bundle.Key] += string(next.CertPEM())
				w.InForceAnchors = []*x509Cert{w.Anchor.Cert, next.Cert}
			},
			Want: []*regexp.Regexp{
				regexp.MustCompile(`(?m)^anchor 0 anchor \([0-9a-f]{12}\)\s+OK\s+364d\s+CA, valid for 364d more; used by the issuer in force$`),
				regexp.MustCompile(`(?m)^anchor 1 anchor \([0-9a-f]{12}\)\s+OK\s+729d\s+CA, valid for 729d more; nothing uses it`),
			},
		},
		{
			Name: "anchor not valid yet",
			Mod: func(t testing.TB, w *World) {
				next := pkitest.CA(t, nil, "next", w.Now.Add(Day), Year)
				w.Bundle.Data[bundle.Key] += string(next.CertPEM())
				w.InForceAnchors = []*x509Cert{w.Anchor.Cert, next.Cert}
			},
			Want:    []*regexp.Regexp{Row("anchor 1 next", health.Fail, "not valid before 2030-06-02T12:00:00Z")},
			Hints:   []string{"anchor 1 next"},
			Problem: true,
		},
		{
			Name: "anchor in use within --warn-within",
			Mod:  func(_ testing.TB, w *World) { w.Opts = func(o *check.Options) { o.WarnWithin = 400 * Day } },
			Want: []*regexp.Regexp{
				Row("anchor 0 anchor", health.Warn, "expires in 364d, within the 400d warning window; used by the issuer in force"),
				Hint("anchor 0 anchor", "rotate it now, with no downtime: `meshid rotate-anchor start --generate --write-anchor-key new-anchor.key -n meshid`"),
			},
			Hints: []string{"anchor 0 anchor"},
		},
		{
			Name: "anchor within --warn-within, --fail-on-warning",
			Mod: func(_ testing.TB, w *World) {
				w.Opts = func(o *check.Options) { o.WarnWithin, o.FailOnWarning = 400*Day, true }
			},
			Want:    []*regexp.Regexp{Row("anchor 0 anchor", health.Warn, "warning window")},
			Hints:   []string{"anchor 0 anchor"},
			Problem: true,
		},

		// The issuer: what the replicas sign with, and what the Secret holds.
		{
			Name: "expired issuer in the Secret: refused, the CA keeps the last good one",
			Mod: func(t testing.TB, w *World) {
				expired := pkitest.CA(t, w.Anchor, "expired", w.Now.Add(-50*time.Hour), 48*time.Hour)
				w.IssuerSecret = IssuerSecret(t, expired)
				w.Updates = []fleet.Update{{Material: "issuer", Source: "Secret meshid/meshid-issuer", Status: fleet.UpdateRefused, SHA256: expired.Fingerprint(),
					Reason: "issuer: invalid issuer: CN=expired,O=meshid has expired: its chain ends at 2030-06-01T10:00:00Z", Since: Now.Add(-10 * time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.OK, "in force on 2 of 2 replicas: CN=issuer,O=meshid"),
				Row(IssuerUpdateRow, health.Fail, "Secret meshid/meshid-issuer holds CN=expired,O=meshid (sha256 "),
				Row(IssuerUpdateRow, health.Fail, "not the issuer in force; refused by 2 of 2 replicas since 2030-06-01T11:50:00Z: issuer: invalid issuer: CN=expired,O=meshid has expired"),
				Row(IssuerUpdateRow, health.Fail, "; meshid-ca keeps signing with issuer "),
				Hint(IssuerUpdateRow, "`kubectl -n meshid create secret tls meshid-issuer --cert=issuer.crt --key=issuer.key --dry-run=client -o yaml | kubectl -n meshid apply -f -`"),
				regexp.MustCompile(`(?m)^Time to outage: 47h00m \(issuer meshid/meshid-issuer in force, at 2030-06-03T11:00:00Z\)$`),
			},
			Hints:   []string{IssuerUpdateRow},
			Absent:  []string{"expired 1h00m ago"},
			Problem: true,
		},
		{
			Name: "issuer Secret deleted: the CA keeps the last good one",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret = nil
				w.Updates = []fleet.Update{{Material: "issuer", Source: "Secret meshid/meshid-issuer", Status: fleet.UpdateGone,
					Reason: "source: *v1.Secret meshid/meshid-issuer was deleted; the last good issuer stays in force until it is recreated", Since: Now.Add(-10 * time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.OK, "in force on 2 of 2 replicas"),
				Row(IssuerUpdateRow, health.Fail, "Secret meshid/meshid-issuer: Secret not found; lost by 2 of 2 replicas since 2030-06-01T11:50:00Z: source: "),
				Hint(IssuerUpdateRow, "`kubectl -n meshid create secret tls meshid-issuer --cert=issuer.crt --key=issuer.key --dry-run=client -o yaml | kubectl -n meshid apply -f -`"),
				regexp.MustCompile(`(?m)^Time to outage: 47h00m \(issuer meshid/meshid-issuer in force, at 2030-06-03T11:00:00Z\)$`),
			},
			Hints:   []string{IssuerUpdateRow},
			Absent:  []string{"3649d", "364d (anchor"},
			Problem: true,
		},
		{
			Name: "issuer Secret unreadable",
			Mod: func(_ testing.TB, w *World) {
				refuse(w, "secrets", manifest.IssuerSecret, forbidden("secrets", manifest.IssuerSecret))
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.OK, "in force"), Row(IssuerUpdateRow, health.Fail, "Secret meshid/meshid-issuer: cannot read the Secret: ")},
			Hints:   []string{IssuerUpdateRow},
			Problem: true,
		},
		{
			Name: "issuer Secret with a key that does not match",
			Mod: func(t testing.TB, w *World) {
				other := pkitest.CA(t, w.Anchor, "other", w.Now.Add(-time.Hour), 48*time.Hour)
				w.IssuerSecret.Data["tls.key"] = IssuerSecret(t, other).Data["tls.key"]
			},
			Want:    []*regexp.Regexp{Row(IssuerUpdateRow, health.Fail, "the private key does not match")},
			Hints:   []string{IssuerUpdateRow},
			Problem: true,
		},
		{
			Name: "issuer Secret from another anchor, not yet seen by the replicas",
			Mod: func(t testing.TB, w *World) {
				stranger := pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year)
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, stranger, "stranger issuer", w.Now.Add(-time.Hour), 48*time.Hour))
			},
			Want:    []*regexp.Regexp{Row(IssuerUpdateRow, health.Fail, "meshid-ca will not take it: issuer: invalid issuer: CN=stranger issuer,O=meshid does not chain to the trust bundle")},
			Hints:   []string{IssuerUpdateRow},
			Problem: true,
		},
		{
			Name: "issuer held back: its anchor is not in the bundle",
			Mod: func(t testing.TB, w *World) {
				stranger := pkitest.CA(t, pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year), "stranger issuer", w.Now.Add(-time.Hour), 48*time.Hour)
				w.IssuerSecret = IssuerSecret(t, stranger)
				w.Updates = []fleet.Update{{Material: "issuer", Source: "Secret meshid/meshid-issuer", Status: fleet.UpdateHeldBack, SHA256: stranger.Fingerprint(),
					Reason: "issuer: invalid issuer: CN=stranger issuer,O=meshid does not chain to the trust bundle (held back: it will be used once the trust bundle holds its anchor and it is valid)", Since: Now.Add(-time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(IssuerUpdateRow, health.Fail, "held back by 2 of 2 replicas since 2030-06-01T11:59:00Z"),
				Hint(IssuerUpdateRow, "to replace the anchor, run `meshid rotate-anchor start --generate --write-anchor-key new-anchor.key -n meshid`"),
			},
			Hints:   []string{IssuerUpdateRow},
			Problem: true,
		},
		{
			Name: "new issuer in the Secret, not loaded yet",
			Mod: func(t testing.TB, w *World) {
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, w.Anchor, "next issuer", w.Now.Add(-time.Minute), 48*time.Hour))
			},
			Want:  []*regexp.Regexp{Row(IssuerUpdateRow, health.Warn, "holds CN=next issuer,O=meshid (sha256 "), Row(IssuerUpdateRow, health.Warn, ": not loaded yet")},
			Hints: []string{IssuerUpdateRow},
		},
		{
			Name: "a replica with no issuer",
			Mod: func(_ testing.TB, w *World) {
				w.Report = func(r *fleet.Report) {
					if r.Replica == "meshid-ca-b" {
						r.IssuerSHA256, r.Issuer = "", nil
					}
				}
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "replica meshid-ca-b has no issuer in force: it cannot sign certificates"), Row(IssuerRow, health.OK, "in force on 1 of 2 replicas")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "replicas sign with different issuers",
			Mod: func(t testing.TB, w *World) {
				next := TrustReport(pkitest.CA(t, w.Anchor, "next issuer", w.Now.Add(-time.Minute), 48*time.Hour), []*x509Cert{w.Anchor.Cert}, w.Now)
				w.Report = func(r *fleet.Report) {
					if r.Replica == "meshid-ca-b" {
						r.IssuerSHA256, r.Issuer = next.IssuerSHA256, next.Issuer
					}
				}
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.Warn, "in force on meshid-ca-a: CN=issuer,O=meshid"),
				Row(IssuerRow, health.Warn, "in force on meshid-ca-b: CN=next issuer,O=meshid"),
				Row(IssuerRow, health.Warn, "the replicas sign with 2 issuers"),
			},
			Hints: []string{IssuerRow},
		},
		{
			Name: "issuer in force has expired",
			Mod: func(t testing.TB, w *World) {
				w.InForce = pkitest.CA(t, w.Anchor, "expired", w.Now.Add(-50*time.Hour), 48*time.Hour)
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "expired at 2030-06-01T10:00:00Z: the CA cannot sign")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "issuer in force within a third of its lifetime",
			Mod: func(t testing.TB, w *World) {
				w.InForce = pkitest.CA(t, w.Anchor, "late", w.Now.Add(-40*time.Hour), 48*time.Hour)
				w.IssuerSecret = IssuerSecret(t, w.InForce)
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.Fail, "expires in 8h00m, within 16h00m"),
				Hint(IssuerRow, "it should have been renewed by now: put a new one in the Secret, `kubectl -n meshid create secret tls meshid-issuer"),
			},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name:    "issuer in force within --issuer-warn-within",
			Mod:     func(_ testing.TB, w *World) { w.Opts = func(o *check.Options) { o.IssuerWarnWithin = 72 * time.Hour } },
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "expires in 47h00m, within 3d")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "issuer in force within cert-manager's renewBefore",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": manifest.IssuerSecret}
				certManager(w, "True", "True", w.Anchor)
				u := w.Dynamic[1].(*unstructured.Unstructured)
				_ = unstructured.SetNestedField(u.Object, "50h", "spec", "renewBefore")
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.Fail, "expires in 47h00m, within 2d"),
				Hint(IssuerRow, "`kubectl -n meshid describe certificate meshid-issuer` says why cert-manager has not"),
			},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "a meshid-ca too old to describe its issuer",
			Mod: func(t testing.TB, w *World) {
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, w.Anchor, "next issuer", w.Now.Add(-time.Minute), 48*time.Hour))
				w.Report = func(r *fleet.Report) { r.Issuer, r.Anchors, r.AnchorsTotal = nil, nil, 0 }
			},
			Want:  []*regexp.Regexp{Row(IssuerRow, health.Warn, "the replicas do not say more (a meshid-ca older than this meshid)")},
			Hints: []string{IssuerRow},
		},

		// No replica reports: the rows read the objects.
		{
			Name: "no replica reports",
			Mod:  noReports,
			Want: []*regexp.Regexp{
				Row(ReportsRow, health.Warn, "no meshid-ca replica has published a report within 30s (0 stale): the trust rows are read from the Secret and the ConfigMap"),
				Hint(ReportsRow, "`kubectl -n meshid get pods -l app.kubernetes.io/name=meshid-ca`"),
				Row(BundleRow, health.OK, "1 anchor(s), sha256 "),
				Row(BundleRow, health.OK, "(from the ConfigMap: no meshid-ca replica reports what it has in force)"),
				Row("anchor 0 anchor", health.OK, "used by the issuer in the Secret"),
				Row(IssuerRow, health.OK, "CA, key matches, chains to the bundle, valid for 47h00m more (from the Secret"),
				regexp.MustCompile(`(?m)^Time to outage: 47h00m \(issuer meshid/meshid-issuer from the Secret, at 2030-06-03T11:00:00Z\)$`),
			},
			Hints:  []string{ReportsRow},
			Absent: []string{"proxies"},
		},
		{
			Name: "only stale reports",
			Mod: func(_ testing.TB, w *World) {
				w.Report = func(r *fleet.Report) { r.Updated = Now.Add(-time.Hour) }
			},
			Want:  []*regexp.Regexp{Row(ReportsRow, health.Warn, "(2 stale)"), Row(IssuerRow, health.OK, "(from the Secret")},
			Hints: []string{ReportsRow},
		},
		{
			Name:  "fewer replicas report than are ready",
			Mod:   func(_ testing.TB, w *World) { w.Replicas = w.Replicas[:1] },
			Want:  []*regexp.Regexp{Row(ReportsRow, health.Warn, "2 replicas are ready but 1 report (meshid-ca-a)")},
			Hints: []string{ReportsRow},
		},
		{
			Name: "no reports: bundle ConfigMap missing",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.Bundle = nil
			},
			Want: []*regexp.Regexp{
				Row(BundleRow, health.Fail, "ConfigMap not found"),
				Hint(BundleRow, "`kubectl -n meshid create configmap meshid-trust-bundle --from-file=ca-bundle.crt=anchors.pem`"),
				Row(IssuerRow, health.Fail, "cannot be checked without a trust bundle"),
			},
			Hints:   []string{BundleRow, IssuerRow},
			Problem: true,
		},
		{
			Name: "no reports: bundle does not parse",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.Bundle.Data[bundle.Key] = "not PEM"
			},
			Want:    []*regexp.Regexp{Row(BundleRow, health.Fail, "")},
			Hints:   []string{BundleRow},
			Absent:  []string{"anchor 0"},
			Problem: true,
		},
		{
			Name: "no reports: expired anchor",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.Bundle.Data[bundle.Key] += string(pkitest.CA(t, nil, "old", w.Now.Add(-2*Year), Year).CertPEM())
			},
			Want:    []*regexp.Regexp{Row("anchor 1 old", health.Fail, "nothing uses it (the issuer chains to anchor "), Row("anchor 1 old", health.Fail, "; no replica reports what the proxies' certificates chain to)")},
			Hints:   []string{"anchor 1 old"},
			Problem: true,
		},
		{
			Name: "no reports: issuer Secret missing",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.IssuerSecret = nil
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.Fail, "Secret not found"),
				Hint(IssuerRow, "create it: `kubectl -n meshid create secret tls meshid-issuer --cert=issuer.crt --key=issuer.key`, or install meshid with `meshid install --apply -n meshid`"),
				regexp.MustCompile(`(?m)^Time to outage: unknown: no issuer in force could be read$`),
			},
			Hints:   []string{IssuerRow},
			Absent:  []string{"3649d", "Time to outage: 364d"},
			Problem: true,
		},
		{
			Name: "no reports: issuer key does not match",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				other := pkitest.CA(t, w.Anchor, "other", w.Now.Add(-time.Hour), 48*time.Hour)
				w.IssuerSecret.Data["tls.key"] = IssuerSecret(t, other).Data["tls.key"]
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "the private key does not match")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "no reports: issuer from another anchor",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				stranger := pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year)
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, stranger, "issuer", w.Now.Add(-time.Hour), 48*time.Hour))
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "does not chain to any anchor of the bundle")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "no reports: issuer expired",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, w.Anchor, "issuer", w.Now.Add(-50*time.Hour), 48*time.Hour))
			},
			Want: []*regexp.Regexp{
				Row(IssuerRow, health.Fail, "expired"),
				regexp.MustCompile(`(?m)^Time to outage: expired 2h00m ago \(issuer meshid/meshid-issuer from the Secret, at`),
			},
			Hints:   []string{IssuerRow},
			Problem: true,
		},
		{
			Name: "no reports: issuer within a third of its lifetime",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.IssuerSecret = IssuerSecret(t, pkitest.CA(t, w.Anchor, "issuer", w.Now.Add(-40*time.Hour), 48*time.Hour))
			},
			Want:    []*regexp.Regexp{Row(IssuerRow, health.Fail, "expires in 8h00m, within 16h00m")},
			Hints:   []string{IssuerRow},
			Problem: true,
		},

		// cert-manager.
		{
			Name: "cert-manager ready",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": manifest.IssuerSecret}
				certManager(w, "True", "True", w.Anchor)
			},
			Want: []*regexp.Regexp{
				Row("cert-manager issuer meshid/meshid-anchor", health.OK, "Ready (KeyPairVerified): Signing CA verified"),
				Row("anchor secret meshid/meshid-anchor", health.OK, "holds anchor 0 ("),
				Row("cert-manager certificate meshid/meshid-issuer", health.OK, "Ready (Ready): Certificate is up to date and has not expired"),
				Row(IssuerRow, health.OK, "in force"),
			},
		},
		{
			Name: "cert-manager not ready: the Issuer's Secret is missing",
			Mod: func(t testing.TB, w *World) {
				noReports(t, w)
				w.IssuerSecret = nil
				certManager(w, "False", "False", nil)
			},
			Want: []*regexp.Regexp{
				Row("cert-manager issuer meshid/meshid-anchor", health.Fail, `not Ready (ErrGetKeyPair): Error getting keypair for CA issuer: secrets "meshid-anchor" not found`),
				Hint("cert-manager issuer meshid/meshid-anchor", "`kubectl -n meshid describe issuer meshid-anchor` shows cert-manager's events"),
				Row("anchor secret meshid/meshid-anchor", health.Fail, "Secret not found: the CA Issuer cannot sign the issuer"),
				Hint("anchor secret meshid/meshid-anchor", "`kubectl -n meshid create secret tls meshid-anchor --cert=anchor.crt --key=anchor.key`"),
				Row("cert-manager certificate meshid/meshid-issuer", health.Fail, "not Ready (DoesNotExist): Issuing certificate as Secret does not exist"),
				Row(IssuerRow, health.Fail, "Secret not found"),
				Hint(IssuerRow, "cert-manager writes it once Certificate meshid/meshid-issuer is Ready: see the cert-manager rows"),
			},
			Hints:   []string{"cert-manager issuer", "anchor secret", "cert-manager certificate", IssuerRow},
			Absent:  []string{"meshid install"},
			Problem: true,
		},
		{
			Name: "cert-manager: the issuer Secret deleted, the CA keeps the last good one",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret = nil
				certManager(w, "True", "False", w.Anchor)
				w.Updates = []fleet.Update{{Material: "issuer", Source: "Secret meshid/meshid-issuer", Status: fleet.UpdateGone, Reason: "source: deleted", Since: Now.Add(-time.Minute)}}
			},
			Want: []*regexp.Regexp{
				Row(IssuerUpdateRow, health.Fail, "lost by 2 of 2 replicas"),
				Hint(IssuerUpdateRow, "cert-manager writes Secret meshid/meshid-issuer once Certificate meshid/meshid-issuer is Ready: `kubectl -n meshid describe certificate meshid-issuer` says why it is not"),
			},
			Hints:   []string{IssuerUpdateRow, "cert-manager certificate"},
			Problem: true,
		},
		{
			Name: "cert-manager: the anchor Secret holds another anchor",
			Mod: func(t testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": manifest.IssuerSecret}
				certManager(w, "True", "True", pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year))
			},
			Want: []*regexp.Regexp{
				Row("anchor secret meshid/meshid-anchor", health.Fail, "which is not an anchor of the bundle in force"),
				Hint("anchor secret", "`meshid rotate-anchor start --cert-manager --new-anchor-cert anchor.crt --new-anchor-key anchor.key -n meshid`"),
			},
			Hints:   []string{"anchor secret"},
			Problem: true,
		},
		{
			Name: "cert-manager: the anchor Secret may not be read",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": manifest.IssuerSecret}
				certManager(w, "True", "True", w.Anchor)
				refuse(w, "secrets", manifest.AnchorSecret, forbidden("secrets", manifest.AnchorSecret))
			},
			Want: []*regexp.Regexp{Row("anchor secret meshid/meshid-anchor", health.Skip, "skipped: not allowed to read it (it holds the anchor's key): cannot read the Secret: ")},
		},
		{
			Name: "cert-manager: no Ready condition yet",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": manifest.IssuerSecret}
				certManager(w, "True", "", w.Anchor)
			},
			Want: []*regexp.Regexp{
				Row("cert-manager certificate meshid/meshid-issuer", health.Warn, "no Ready condition yet"),
				Hint("cert-manager certificate", "`kubectl get pods --all-namespaces -l app.kubernetes.io/name=cert-manager`"),
			},
			Hints: []string{"cert-manager certificate"},
		},
		{
			Name: "cert-manager: the Certificate the Secret names is gone",
			Mod: func(_ testing.TB, w *World) {
				w.IssuerSecret.Annotations = map[string]string{"cert-manager.io/certificate-name": "gone"}
			},
			Want: []*regexp.Regexp{
				Row("cert-manager certificate meshid/gone", health.Fail, "no such Certificate"),
				Hint("cert-manager certificate", "`meshid install --cert-manager -n meshid` prints it"),
				Row(IssuerRow, health.OK, "in force"),
			},
			Hints:   []string{"cert-manager certificate"},
			Problem: true,
		},
		{
			Name: "cert-manager: a ClusterIssuer",
			Mod: func(_ testing.TB, w *World) {
				w.Dynamic = append(w.Dynamic,
					&unstructured.Unstructured{Object: map[string]any{
						"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": map[string]any{"name": "root"},
						"spec":   map[string]any{"ca": map[string]any{"secretName": "root"}},
						"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "ErrInitIssuer", "message": "no root"}}},
					}},
					&unstructured.Unstructured{Object: map[string]any{
						"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": map[string]any{"namespace": NS, "name": "issuer"},
						"spec":   map[string]any{"secretName": manifest.IssuerSecret, "issuerRef": map[string]any{"name": "root", "kind": "ClusterIssuer"}},
						"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok"}}},
					}})
			},
			Want: []*regexp.Regexp{
				Row("cert-manager clusterissuer root", health.Fail, "not Ready (ErrInitIssuer): no root"),
				Hint("cert-manager clusterissuer root", "`kubectl describe clusterissuer root`"),
				Row("cert-manager certificate meshid/issuer", health.OK, "Ready"),
			},
			Hints:   []string{"cert-manager clusterissuer"},
			Absent:  []string{"anchor secret"},
			Problem: true,
		},

		// The webhook.
		{
			Name: "webhook CA in sync",
			Mod: func(t testing.TB, w *World) {
				ca := pkitest.CA(t, nil, "webhook CA", w.Now.Add(-time.Hour), Year)
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, ca.CertPEM()), Injector(ca.CertPEM()))
			},
			Want: []*regexp.Regexp{Row("webhook CA", health.OK, "valid for 364d more, caBundle in sync")},
		},
		{
			Name: "webhook CA without an injector configuration",
			Mod: func(t testing.TB, w *World) {
				ca := pkitest.CA(t, nil, "webhook CA", w.Now.Add(-time.Hour), Year)
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			Want: []*regexp.Regexp{Row("webhook CA", health.OK, "valid for 364d more")},
		},
		{
			Name: "webhook CA out of sync with the injector",
			Mod: func(t testing.TB, w *World) {
				ca := pkitest.CA(t, nil, "webhook CA", w.Now.Add(-time.Hour), Year)
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, ca.CertPEM()), Injector(w.Anchor.CertPEM()))
			},
			Want:    []*regexp.Regexp{Row("webhook CA", health.Fail, "the injector's caBundle is not the webhook CA"), Hint("webhook CA", "`kubectl -n meshid logs deployment/meshid-webhook`")},
			Hints:   []string{"webhook CA"},
			Problem: true,
		},
		{
			Name: "webhook CA expired",
			Mod: func(t testing.TB, w *World) {
				ca := pkitest.CA(t, nil, "webhook CA", w.Now.Add(-2*Year), Year)
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			Want: []*regexp.Regexp{
				Row("webhook CA", health.Fail, "expired: the API server refuses the webhooks' certificates"),
				Hint("webhook CA", "`kubectl -n meshid delete secret meshid-webhook-ca` then `kubectl -n meshid rollout restart deployment/meshid-webhook`"),
			},
			Hints:   []string{"webhook CA"},
			Problem: true,
		},
		{
			Name: "webhook CA within --warn-within",
			Mod: func(t testing.TB, w *World) {
				ca := pkitest.CA(t, nil, "webhook CA", w.Now.Add(-time.Hour), 30*Day)
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, ca.CertPEM()))
			},
			Want:  []*regexp.Regexp{Row("webhook CA", health.Warn, "expires in 29d")},
			Hints: []string{"webhook CA"},
		},
		{
			Name: "webhook CA does not parse",
			Mod: func(_ testing.TB, w *World) {
				w.Objects = append(w.Objects, Secret(manifest.WebhookCASecret, []byte("junk")))
			},
			Want:    []*regexp.Regexp{Row("webhook CA", health.Fail, "")},
			Hints:   []string{"webhook CA"},
			Problem: true,
		},
		{
			Name: "webhook certificate fresh",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Objects = append(w.Objects, Secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			Want: []*regexp.Regexp{Row("webhook certificate", health.OK, "valid for 23h00m more")},
		},
		{
			Name: "webhook certificate past its renewal time",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-20*time.Hour), 24*time.Hour)
				w.Objects = append(w.Objects, Secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			Want:  []*regexp.Regexp{Row("webhook certificate", health.Warn, "expires in 4h00m, past its renewal time"), Hint("webhook certificate", "`kubectl -n meshid describe certificate meshid-webhook-tls`")},
			Hints: []string{"webhook certificate"},
		},
		{
			Name: "webhook certificate expired",
			Mod: func(t testing.TB, w *World) {
				old := pkitest.CA(t, w.Anchor, "old issuer", w.Now.Add(-10*Day), 20*Day)
				chain, _ := pkitest.Leaf(t, old, Web, w.Now.Add(-25*time.Hour), 24*time.Hour)
				w.Objects = append(w.Objects, Secret(manifest.WebhookTLSSecret, pkitest.PEM(chain[0])))
			},
			Want:    []*regexp.Regexp{Row("webhook certificate", health.Fail, "expired: the API server cannot call the webhooks")},
			Hints:   []string{"webhook certificate"},
			Problem: true,
		},
		{
			Name: "webhook certificate Secret without a certificate",
			Mod: func(_ testing.TB, w *World) {
				w.Objects = append(w.Objects, Secret(manifest.WebhookTLSSecret, []byte("junk")))
			},
			Want:    []*regexp.Regexp{Row("webhook certificate", health.Fail, "Secret meshid-webhook-tls holds no certificate")},
			Hints:   []string{"webhook certificate"},
			Problem: true,
		},
		{
			Name: "webhook certificate does not parse",
			Mod: func(_ testing.TB, w *World) {
				w.Objects = append(w.Objects, Secret(manifest.WebhookTLSSecret, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))
			},
			Want:    []*regexp.Regexp{Row("webhook certificate", health.Fail, "x509: ")},
			Hints:   []string{"webhook certificate"},
			Problem: true,
		},

		// The CA Deployment.
		{
			Name:  "CA Deployment missing",
			Mod:   func(_ testing.TB, w *World) { w.Deployment = nil },
			Want:  []*regexp.Regexp{Row(CARow, health.Warn, "Deployment not found"), Hint(CARow, "`meshid install --apply -n meshid`")},
			Hints: []string{CARow},
		},
		{
			Name: "CA Deployment unreadable",
			Mod: func(_ testing.TB, w *World) {
				refuse(w, "deployments", "", apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, manifest.CAName, errors.New("RBAC says no")))
			},
			Want:  []*regexp.Regexp{Row(CARow, health.Warn, "cannot read the Deployment: ")},
			Hints: []string{CARow},
		},
		{
			Name:    "CA Deployment with no ready replica",
			Mod:     func(_ testing.TB, w *World) { w.Deployment.Status.ReadyReplicas = 0 },
			Want:    []*regexp.Regexp{Row(CARow, health.Fail, "0 of 2 ready"), Hint(CARow, "`kubectl -n meshid describe deployment meshid-ca` says why")},
			Hints:   []string{CARow},
			Problem: true,
		},
		{
			Name:  "CA Deployment partly ready",
			Mod:   func(_ testing.TB, w *World) { w.Deployment.Status.ReadyReplicas = 1 },
			Want:  []*regexp.Regexp{Row(CARow, health.Warn, "1 of 2 ready"), Hint(CARow, "`kubectl -n meshid get pods -l app.kubernetes.io/name=meshid-ca`")},
			Hints: []string{CARow},
		},
		{
			Name: "CA Deployment without replicas is one replica",
			Mod: func(_ testing.TB, w *World) {
				w.Deployment.Spec.Replicas, w.Deployment.Status.ReadyReplicas = nil, 1
			},
			Want: []*regexp.Regexp{Row(CARow, health.OK, "1 of 1 ready")},
		},
		{
			Name:   "no --deployment",
			Mod:    func(_ testing.TB, w *World) { w.Opts = func(o *check.Options) { o.Deployment = "" } },
			Absent: []string{"ca replicas"},
		},

		// The proxies the replicas report.
		{
			Name: "reported proxies, all ok",
			Mod: func(t testing.TB, w *World) {
				w.Fleet = []fleet.Proxy{w.Reported(t, Web, "00000000000000a1"), w.Reported(t, Web, "00000000000000a2")}
			},
			Want: []*regexp.Regexp{
				Row("proxies", health.OK, "2 reported: all ok"),
				Row("proxy spiffe://cluster.local/ns/shop/sa/web (00000000)", health.OK, "certificate valid for 20h00m more, bundle in force, seen 3s ago"),
				Row("anchor 0 anchor", health.OK, "used by the issuer in force, 2 reported proxies' certificates"),
			},
		},
		{
			Name: "reported proxies lagging",
			Mod: func(t testing.TB, w *World) {
				ok := w.Reported(t, Web, "0000000000000001")
				oldBundle := w.Reported(t, spiffeid.RequireFromPath(TD, "/ns/shop/sa/old-bundle"), "0000000000000002")
				oldBundle.BundleSHA256 = strings.Repeat("ab", 32)
				expired := w.Reported(t, spiffeid.RequireFromPath(TD, "/ns/shop/sa/expired"), "0000000000000003")
				expired.LeafNotAfter = w.Now.Add(-time.Hour)
				silent := w.Reported(t, spiffeid.RequireFromPath(TD, "/ns/shop/sa/silent"), "0000000000000004")
				silent.LastSeen = w.Now.Add(-2 * time.Minute)
				stranger := w.Reported(t, spiffeid.RequireFromPath(TD, "/ns/shop/sa/stranger"), "0000000000000005")
				stranger.LeafAnchorSHA256 = strings.Repeat("cd", 32)
				noLeaf := w.Reported(t, spiffeid.RequireFromPath(TD, "/ns/shop/sa/starting"), "0000000000000006")
				noLeaf.LeafNotAfter = time.Time{}
				overCap := fleet.Proxy{ID: Web.String(), LastSeen: w.Now.Add(-time.Minute), OverCap: true}
				w.Fleet = []fleet.Proxy{ok, oldBundle, expired, silent, stranger, noLeaf, overCap}
			},
			Want: []*regexp.Regexp{
				Row("proxies", health.Fail, "7 reported: 1 ok, 6 lagging"),
				Row("proxy spiffe://cluster.local/ns/shop/sa/old-bundle (00000000)", health.Warn, "holds bundle abababababab, the one in force is "),
				Row("proxy spiffe://cluster.local/ns/shop/sa/expired (00000000)", health.Fail, "its certificate expired at 2030-06-01T11:00:00Z"),
				Row("proxy spiffe://cluster.local/ns/shop/sa/silent (00000000)", health.Warn, "silent for 2m0s: cut off from the CA, or gone (forgotten after 5m0s)"),
				Row("proxy spiffe://cluster.local/ns/shop/sa/stranger (00000000)", health.Fail, "its certificate chains to anchor cdcdcdcdcdcd, which is not in the bundle in force"),
				Row("proxy spiffe://cluster.local/ns/shop/sa/starting (00000000)", health.Warn, "reports no certificate yet"),
				Row("proxies over a cap spiffe://cluster.local/ns/shop/sa/web", health.Warn, "refused by a CA replica over its cap 1m0s ago"),
				regexp.MustCompile(`(?m)^Time to outage: expired 1h00m ago \(proxy spiffe://cluster.local/ns/shop/sa/expired \(00000000\), at`),
			},
			Hints:   []string{"proxies", "proxy spiffe://cluster.local/ns/shop/sa/expired"},
			Problem: true,
		},

		// Proxies asked directly.
		{
			Name: "proxy healthy",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.PEM(chain...), w.BundleSHA(t)))}
			},
			Want: []*regexp.Regexp{
				regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+OK\s+23h00m\s+spiffe://cluster.local/ns/shop/sa/web, valid for 23h00m more`),
				regexp.MustCompile(`(?m)^anchor 0 anchor \([0-9a-f]{12}\)\s+OK\s+.*used by the issuer in force, proxy 127\.0\.0\.1:\d+`),
			},
		},
		{
			Name: "proxy unreachable",
			Mod: func(t testing.TB, w *World) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				w.Proxies = []string{l.Addr().String()}
				l.Close()
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+cannot reach /identity: `)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name:    "proxy answers no JSON",
			Mod:     func(t testing.TB, w *World) { w.Proxies = []string{Proxy(t, "<html>")} },
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+/identity did not answer JSON: `)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name: "proxy chain is not certificates",
			Mod: func(t testing.TB, w *World) {
				_, key := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.KeyPEM(t, key), w.BundleSHA(t)))}
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+/identity chain: block 1 is "PRIVATE KEY"; inspect reads certificates only`)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name:    "proxy holds no certificate",
			Mod:     func(t testing.TB, w *World) { w.Proxies = []string{Proxy(t, IdentityDoc(t, nil, ""))} },
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+-\s+holds no certificate`)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name: "proxy certificate expired",
			Mod: func(t testing.TB, w *World) {
				old := pkitest.CA(t, w.Anchor, "old issuer", w.Now.Add(-10*Day), 20*Day)
				chain, _ := pkitest.Leaf(t, old, Web, w.Now.Add(-25*time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.PEM(chain...), w.BundleSHA(t)))}
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+expired 1h00m ago\s+its certificate expired at 2030-06-01T11:00:00Z`)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name: "proxy certificate from another anchor",
			Mod: func(t testing.TB, w *World) {
				stranger := pkitest.CA(t, pkitest.CA(t, nil, "stranger", w.Now.Add(-time.Hour), Year), "issuer", w.Now.Add(-time.Hour), 48*time.Hour)
				chain, _ := pkitest.Leaf(t, stranger, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.PEM(chain...), w.BundleSHA(t)))}
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+23h00m\s+its certificate does not chain to the current bundle: `)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name: "proxy certificate past its renewal time",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-20*time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.PEM(chain...), w.BundleSHA(t)))}
			},
			Want: []*regexp.Regexp{
				regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+WARN\s+4h00m\s+its certificate expires in 4h00m, past its renewal time`),
				regexp.MustCompile(`(?m)^Time to outage: 4h00m \(proxy 127\.0\.0\.1:\d+, at`),
			},
			Hints: []string{"proxy 127.0.0.1"},
		},
		{
			Name: "proxy holds another bundle",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, IdentityDoc(t, pkitest.PEM(chain...), strings.Repeat("ab", 32)))}
			},
			Want:  []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+WARN\s+23h00m\s+holds bundle abababababab, the cluster's is [0-9a-f]{12}`)},
			Hints: []string{"proxy 127.0.0.1"},
		},
		{
			Name: "transparent proxy healthy",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, TransparentDoc(t, pkitest.PEM(chain...), w.BundleSHA(t), true, "", true, w.Now.Add(-time.Minute)))}
			},
			Want: []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+OK\s+23h00m\s+spiffe://cluster.local/ns/shop/sa/web, valid for 23h00m more; transparent, redirect present and matching, destinations fresh \(updated 1m0s ago\)`)},
		},
		{
			Name: "transparent proxy without its redirect",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, TransparentDoc(t, pkitest.PEM(chain...), w.BundleSHA(t), false, "redirect: the nftables table inet meshid is missing", true, w.Now))}
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+23h00m\s+transparent, but its pod's redirect is missing: redirect: the nftables table inet meshid is missing`)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
		{
			Name: "transparent proxy with stale destinations",
			Mod: func(t testing.TB, w *World) {
				chain, _ := pkitest.Leaf(t, w.Issuer, Web, w.Now.Add(-time.Hour), 24*time.Hour)
				w.Proxies = []string{Proxy(t, TransparentDoc(t, pkitest.PEM(chain...), w.BundleSHA(t), true, "", false, time.Time{}))}
			},
			Want:    []*regexp.Regexp{regexp.MustCompile(`(?m)^proxy 127\.0\.0\.1:\d+\s+FAIL\s+23h00m\s+transparent, but its destinations are stale: the CA's discovery stream has not synced`)},
			Hints:   []string{"proxy 127.0.0.1"},
			Problem: true,
		},
	}
}

type x509Cert = x509.Certificate
