package manifest

import (
	"errors"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Names of the step-ca issuer source's objects and mounts.
const (
	// StepCARootConfigMap holds step-ca's root (root_ca.crt), mounted for
	// --step-ca-root.
	StepCARootConfigMap = "meshid-step-ca-root"
	// StepCAProvisionerKey is the key of the provisioner's private JWK in
	// the operator's Secret (StepCA.KeySecret).
	StepCAProvisionerKey = "key.json"

	stepCARootKey = "root_ca.crt"
	stepCADir     = "/etc/meshid/step-ca"
)

// StepCA renders meshid-ca with --issuer-source step-ca: no issuer Secret
// (each replica gets its own intermediate from step-ca), step-ca's root in
// a ConfigMap of its own, the provisioner key mounted from the operator's
// Secret. The trust bundle (BundlePEM) must carry the same root.
type StepCA struct {
	// URL of step-ca, https://HOST:PORT. Required.
	URL string
	// RootPEM is step-ca's root certificate(s). Required.
	RootPEM []byte
	// Provisioner is the JWK provisioner's name. Required.
	Provisioner string
	// KeySecret names the Secret, in the install's namespace, that holds
	// the provisioner's private JWK under key.json; the operator creates
	// it (the key is never rendered). Required.
	KeySecret string
	// IssuerTTL is --issuer-ttl; 0 leaves meshid-ca's default (48 h).
	IssuerTTL time.Duration
}

func (s *StepCA) check() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"URL", s.URL}, {"Provisioner", s.Provisioner}, {"KeySecret", s.KeySecret}, {"RootPEM", string(s.RootPEM)}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return errors.New("manifest: step-ca needs " + strings.Join(missing, ", "))
	}
	return nil
}

// stepCAArgs are meshid-ca's flags for s.
func stepCAArgs(s *StepCA) []string {
	args := []string{
		"--issuer-source=step-ca",
		"--step-ca-url=" + s.URL,
		"--step-ca-root=" + stepCADir + "/root/" + stepCARootKey,
		"--step-ca-provisioner=" + s.Provisioner,
		"--step-ca-provisioner-key=" + stepCADir + "/provisioner/" + StepCAProvisionerKey,
	}
	if s.IssuerTTL != 0 {
		args = append(args, "--issuer-ttl="+s.IssuerTTL.String())
	}
	return args
}

// stepCARoot is the ConfigMap of step-ca's root.
func stepCARoot(s *StepCA, meta func(string) metav1.ObjectMeta) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: meta(StepCARootConfigMap), Data: map[string]string{stepCARootKey: string(s.RootPEM)}}
}

// stepCAMounts mounts the root and the provisioner key (0400, read by
// meshid-ca's user only) into the pod.
func stepCAMounts(s *StepCA, spec *corev1.PodSpec) {
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: "step-ca-root", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: StepCARootConfigMap}}}},
		corev1.Volume{Name: "step-ca-provisioner", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: s.KeySecret, DefaultMode: ptr.To[int32](0o400),
			Items: []corev1.KeyToPath{{Key: StepCAProvisionerKey, Path: StepCAProvisionerKey}}}}},
	)
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts,
		corev1.VolumeMount{Name: "step-ca-root", MountPath: stepCADir + "/root", ReadOnly: true},
		corev1.VolumeMount{Name: "step-ca-provisioner", MountPath: stepCADir + "/provisioner", ReadOnly: true},
	)
}
