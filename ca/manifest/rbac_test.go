package manifest_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshid/meshid/ca/manifest"
)

// TestRBACLeastPrivilege: no rendered rule uses a wildcard; Secrets are
// read only by name; every write to ConfigMaps or Secrets that RBAC cannot
// name is narrowed by an admission policy bound to that service account.
// (TestInstalledRBAC checks the same rules against kube-apiserver.)
func TestRBACLeastPrivilege(t *testing.T) {
	base := manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")}
	webhook := &manifest.Webhook{Image: "wh:1", ProxyImage: "proxy:1"}
	cases := []struct {
		name string
		opts func(o *manifest.Options)
	}{
		{"ca alone", func(*manifest.Options) {}},
		{"with the webhook", func(o *manifest.Options) { o.Webhook = webhook }},
		{"with external workloads", func(o *manifest.Options) { o.External = &manifest.External{} }},
		{"with JWT-SVIDs", func(o *manifest.Options) { o.Webhook, o.JWT = webhook, &manifest.JWT{} }},
		{"with the webhook and cert-manager", func(o *manifest.Options) {
			o.Webhook, o.IssuerCertPEM, o.IssuerKeyPEM = webhook, nil, nil
			o.CertManager = &manifest.CertManager{AnchorCertPEM: []byte("a"), AnchorKeyPEM: []byte("k")}
		}},
		{"with federation", func(o *manifest.Options) { o.Federation = true }},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.opts(&o)
			objs, err := manifest.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			rules := map[string][]rbacv1.PolicyRule{}                      // by role kind/name
			users := map[string][]string{}                                 // role kind/name -> subjects' user names
			narrowed := map[string][]string{}                              // user -> resources a policy narrows
			policies := map[string]bool{}                                  // policies with a binding
			vaps := []*admissionregistrationv1.ValidatingAdmissionPolicy{} // checked once bindings are known
			for _, obj := range objs {
				switch x := obj.(type) {
				case *rbacv1.Role:
					rules["Role/"+x.Name] = x.Rules
				case *rbacv1.ClusterRole:
					rules["ClusterRole/"+x.Name] = x.Rules
				case *rbacv1.RoleBinding:
					users[x.RoleRef.Kind+"/"+x.RoleRef.Name] = append(users[x.RoleRef.Kind+"/"+x.RoleRef.Name], subjectUsers(x.Subjects)...)
				case *rbacv1.ClusterRoleBinding:
					users[x.RoleRef.Kind+"/"+x.RoleRef.Name] = append(users[x.RoleRef.Kind+"/"+x.RoleRef.Name], subjectUsers(x.Subjects)...)
				case *admissionregistrationv1.ValidatingAdmissionPolicy:
					vaps = append(vaps, x)
				case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
					if slices.Contains(x.Spec.ValidationActions, admissionregistrationv1.Deny) {
						policies[x.Spec.PolicyName] = true
					}
				}
			}
			for _, p := range vaps {
				if !policies[p.Name] || *p.Spec.FailurePolicy != admissionregistrationv1.Fail || len(p.Spec.MatchConditions) != 1 {
					t.Errorf("policy %s: bound with Deny %v, failurePolicy %v, %d match conditions; want a binding that denies, failing closed, for one user", p.Name, policies[p.Name], *p.Spec.FailurePolicy, len(p.Spec.MatchConditions))
					continue
				}
				user, ok := strings.CutPrefix(p.Spec.MatchConditions[0].Expression, "request.userInfo.username == ")
				if !ok {
					t.Errorf("policy %s matches %q, not one user", p.Name, p.Spec.MatchConditions[0].Expression)
				}
				for _, r := range p.Spec.MatchConstraints.ResourceRules {
					narrowed[strings.Trim(user, `"`)] = append(narrowed[strings.Trim(user, `"`)], r.Resources...)
				}
			}
			for role, rs := range rules {
				if len(users[role]) == 0 {
					t.Errorf("%s is bound to nobody", role)
				}
				for _, r := range rs {
					if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
						t.Errorf("%s: wildcard in %+v", role, r)
					}
					if len(r.ResourceNames) > 0 || !slices.Equal(r.APIGroups, []string{""}) {
						continue
					}
					for _, res := range r.Resources {
						if res == "secrets" && slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "get" || v == "list" || v == "watch" }) {
							t.Errorf("%s reads every Secret: %+v", role, r)
						}
						writes := slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "create" || v == "update" || v == "patch" })
						if writes && (res == "secrets" || res == "configmaps") {
							for _, u := range users[role] {
								if !slices.Contains(narrowed[u], res) {
									t.Errorf("%s lets %s write any of its %s and no policy narrows that", role, u, res)
								}
							}
						}
					}
				}
			}
		})
	}
}

func subjectUsers(subjects []rbacv1.Subject) []string {
	var out []string
	for _, s := range subjects {
		out = append(out, manifest.ServiceAccountUser(s.Namespace, s.Name))
	}
	return out
}

// TestJWTRBAC: with JWT-SVIDs the CA runs with the key Secret's flag and
// may get, create (by apply), patch and update that one Secret; without
// them, neither.
func TestJWTRBAC(t *testing.T) {
	base := manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")}
	for _, jwt := range []*manifest.JWT{nil, {MaxTTL: 15 * time.Minute}, {OIDCIssuer: "https://oidc.example.com"}} {
		o := base
		o.JWT = jwt
		if got := slices.Contains(manifest.Args(o), "--jwt-key-secret="+manifest.JWTKeySecret); got != (jwt != nil) {
			t.Fatalf("JWT %v: --jwt-key-secret in the args: %v", jwt, got)
		}
		if jwt != nil && jwt.MaxTTL != 0 && !slices.Contains(manifest.Args(o), "--jwt-ttl-max=15m0s") {
			t.Fatalf("--jwt-ttl-max missing from %v", manifest.Args(o))
		}
		oidc := jwt != nil && jwt.OIDCIssuer != ""
		if got := slices.Contains(manifest.Args(o), "--oidc-listen=:8445") && slices.Contains(manifest.Args(o), "--oidc-issuer=https://oidc.example.com"); got != oidc {
			t.Fatalf("OIDC flags %v in %v; want %v", got, manifest.Args(o), oidc)
		}
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var found []rbacv1.PolicyRule
		for _, obj := range objs {
			if svc, ok := obj.(*corev1.Service); ok && svc.Name == manifest.CAName {
				if got := slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "oidc" && p.Port == manifest.OIDCPort }); got != oidc {
					t.Fatalf("Service port oidc %v; want %v", got, oidc)
				}
			}
			if r, ok := obj.(*rbacv1.Role); ok && r.Name == manifest.CAName {
				for _, rule := range r.Rules {
					if slices.Contains(rule.Resources, "secrets") && slices.Contains(rule.ResourceNames, manifest.JWTKeySecret) {
						found = append(found, rule)
					}
				}
			}
		}
		switch {
		case jwt == nil && len(found) != 0:
			t.Fatalf("without JWT-SVIDs the CA may touch the key Secret: %v", found)
		case jwt != nil && (len(found) != 1 || len(found[0].ResourceNames) != 1 || !slices.Equal(found[0].Verbs, []string{"get", "create", "patch", "update"})):
			t.Fatalf("key Secret rules %v; want get, create, patch, update on that name alone", found)
		}
	}
}

// TestFederationRBAC: with federation the CA lists and watches
// FederatedTrustDomains and updates only their status; the CRD is rendered
// and the CA runs with --federated-trust-domains. Without it, none of that.
func TestFederationRBAC(t *testing.T) {
	for _, federation := range []bool{false, true} {
		o := manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k"), Federation: federation}
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var verbs = map[string][]string{} // resource -> verbs
		crd := false
		for _, obj := range objs {
			switch x := obj.(type) {
			case *rbacv1.ClusterRole:
				for _, r := range x.Rules {
					if slices.Contains(r.APIGroups, "meshid.dev") {
						for _, res := range r.Resources {
							verbs[res] = append(verbs[res], r.Verbs...)
						}
					}
				}
			case *unstructured.Unstructured:
				crd = crd || x.GetName() == "federatedtrustdomains.meshid.dev"
			}
		}
		flag := slices.Contains(manifest.Args(o), "--federated-trust-domains")
		if !federation {
			if crd || flag || len(verbs) != 0 {
				t.Errorf("without federation: CRD %v, flag %v, rules %v", crd, flag, verbs)
			}
			continue
		}
		if !crd || !flag {
			t.Errorf("with federation: CRD %v, flag %v", crd, flag)
		}
		if got := verbs["federatedtrustdomains"]; !slices.Equal(got, []string{"list", "watch"}) {
			t.Errorf("federatedtrustdomains: %v, want list and watch only", got)
		}
		if got := verbs["federatedtrustdomains/status"]; !slices.Equal(got, []string{"update"}) {
			t.Errorf("federatedtrustdomains/status: %v, want update only", got)
		}
	}
}
