package manifest_test

import (
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"

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
		{"with the webhook and cert-manager", func(o *manifest.Options) {
			o.Webhook, o.IssuerCertPEM, o.IssuerKeyPEM = webhook, nil, nil
			o.CertManager = &manifest.CertManager{AnchorCertPEM: []byte("a"), AnchorKeyPEM: []byte("k")}
		}},
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
