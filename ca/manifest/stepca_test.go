package manifest_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshid/meshid/ca/manifest"
)

// TestStepCA: with step-ca as the issuer source, no issuer Secret is
// rendered nor readable by meshid-ca; step-ca's root is a ConfigMap and the
// provisioner key the operator's Secret, both mounted for the flags that
// name them.
func TestStepCA(t *testing.T) {
	step := &manifest.StepCA{URL: "https://step-ca.pki:9000", RootPEM: []byte("root"), Provisioner: "meshid", KeySecret: "step-ca-provisioner", IssuerTTL: 24 * time.Hour}
	objs, err := manifest.Render(manifest.Options{Namespace: "mesh", Image: "ca:1", BundlePEM: []byte("anchors"), StepCA: step})
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	var root *corev1.ConfigMap
	for _, obj := range objs {
		switch x := obj.(type) {
		case *corev1.Secret:
			t.Errorf("Secret %s rendered: with step-ca there is no issuer Secret, and the provisioner key is the operator's", x.Name)
		case *rbacv1.Role:
			for _, r := range x.Rules {
				if slices.Contains(r.Resources, "secrets") {
					t.Errorf("Role %s may read Secrets %v: with step-ca meshid-ca reads none", x.Name, r.ResourceNames)
				}
			}
		case *appsv1.Deployment:
			dep = x
		case *corev1.ConfigMap:
			if x.Name == manifest.StepCARootConfigMap {
				root = x
			}
		}
	}
	if root == nil || root.Data["root_ca.crt"] != "root" {
		t.Fatalf("ConfigMap %s with step-ca's root: %v", manifest.StepCARootConfigMap, root)
	}
	spec := dep.Spec.Template.Spec
	args := strings.Join(spec.Containers[0].Args, " ")
	for _, want := range []string{"--issuer-source=step-ca", "--step-ca-url=https://step-ca.pki:9000", "--step-ca-provisioner=meshid",
		"--step-ca-root=/etc/meshid/step-ca/root/root_ca.crt", "--step-ca-provisioner-key=/etc/meshid/step-ca/provisioner/key.json", "--issuer-ttl=24h0m0s"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
	if strings.Contains(args, "--issuer-secret") {
		t.Errorf("args %q name an issuer Secret", args)
	}
	mounts := map[string]string{}
	for _, m := range spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil:
			if v.Secret.SecretName != "step-ca-provisioner" || *v.Secret.DefaultMode != 0o400 || mounts[v.Name] != "/etc/meshid/step-ca/provisioner" {
				t.Errorf("provisioner key volume %+v mounted at %q, want the operator's Secret, 0400, at /etc/meshid/step-ca/provisioner", v.Secret, mounts[v.Name])
			}
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != manifest.StepCARootConfigMap || mounts[v.Name] != "/etc/meshid/step-ca/root" {
				t.Errorf("root volume %+v mounted at %q", v.ConfigMap, mounts[v.Name])
			}
		}
	}
	if len(spec.Volumes) != 2 {
		t.Errorf("volumes %+v, want the root and the provisioner key", spec.Volumes)
	}

	for name, o := range map[string]manifest.Options{
		"and an issuer":    {Image: "ca:1", BundlePEM: []byte("a"), StepCA: step, IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")},
		"no key Secret":    {Image: "ca:1", BundlePEM: []byte("a"), StepCA: &manifest.StepCA{URL: "https://x", RootPEM: []byte("r"), Provisioner: "p"}},
		"and cert-manager": {Image: "ca:1", BundlePEM: []byte("a"), StepCA: step, CertManager: &manifest.CertManager{AnchorCertPEM: []byte("a"), AnchorKeyPEM: []byte("k")}},
	} {
		if _, err := manifest.Render(o); err == nil {
			t.Errorf("step-ca %s: rendered", name)
		}
	}
}
