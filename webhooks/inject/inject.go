// Package inject decides whether a pod gets the meshid-proxy sidecar and
// builds the injected pod: the proxy container, a projected
// service-account token for the CA's audience, and the trust bundle.
// Injection is idempotent and recorded in an annotation.
//
// It imports only identity, for the default trust domain and audience.
package inject

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/identity"
)

// Labels and annotations that steer injection.
const (
	// NamespaceLabel "enabled" on a namespace injects its pods.
	NamespaceLabel = "meshid.dev/inject"
	// PodAnnotation "enabled" or "disabled" on a pod overrides its namespace.
	PodAnnotation = "meshid.dev/inject"
	// InjectedAnnotation records what was injected (the proxy image).
	InjectedAnnotation = "meshid.dev/injected"
	// InboundAnnotation lists inbound ports, "LISTEN=APP_PORT,...".
	InboundAnnotation = "meshid.dev/inbound"
	// OutboundAnnotation lists outbound listeners, "PORT=TARGET[;id=ID],...".
	OutboundAnnotation = "meshid.dev/outbound"
	// ImageAnnotation, CPUAnnotation, MemoryAnnotation override the defaults.
	ImageAnnotation  = "meshid.dev/proxy-image"
	CPUAnnotation    = "meshid.dev/proxy-cpu"
	MemoryAnnotation = "meshid.dev/proxy-memory"
)

// Names of what is injected.
const (
	ContainerName = "meshid-proxy"
	TokenVolume   = "meshid-token"
	BundleVolume  = "meshid-trust-bundle"
	TokenPath     = "/var/run/secrets/meshid"
	BundlePath    = "/var/run/meshid"
)

// Config is what injection puts in.
type Config struct {
	// Image of meshid-proxy. Required.
	Image string
	// CA is the address of meshid-ca. Required.
	CA string
	// TrustDomain, Audience, BundleConfigMap as installed.
	TrustDomain, Audience, BundleConfigMap string
	// TokenExpirationSeconds of the projected token; Kubernetes' minimum
	// is 600.
	TokenExpirationSeconds int64
	// CPU and Memory requests of the proxy.
	CPU, Memory string
}

// Decide says whether pod gets the sidecar, and why.
func Decide(pod *corev1.Pod, namespaceLabels map[string]string) (bool, string) {
	switch {
	case pod.Spec.HostNetwork:
		return false, "hostNetwork pods are not injected: the proxy's ports would be the node's"
	case pod.Annotations[PodAnnotation] == "disabled":
		return false, "the pod opts out (" + PodAnnotation + ": disabled)"
	case hasContainer(pod, ContainerName):
		return false, "already injected"
	case pod.Annotations[PodAnnotation] == "enabled":
		return true, "the pod asks for it (" + PodAnnotation + ": enabled)"
	case namespaceLabels[NamespaceLabel] == "enabled":
		return true, "its namespace is labelled " + NamespaceLabel + "=enabled"
	}
	return false, "neither the pod nor its namespace asks for injection"
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// Pod returns a copy of pod with the sidecar, its volumes and the
// annotation; the caller has decided to inject.
func Pod(pod *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	if cfg.Image == "" || cfg.CA == "" {
		return nil, errors.New("inject: Config.Image and Config.CA are required")
	}
	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	image := or(out.Annotations[ImageAnnotation], cfg.Image)
	requests := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{
		corev1.ResourceCPU:    or(out.Annotations[CPUAnnotation], or(cfg.CPU, "10m")),
		corev1.ResourceMemory: or(out.Annotations[MemoryAnnotation], or(cfg.Memory, "20Mi")),
	} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("inject: %s %q: %w", name, v, err)
		}
		requests[name] = q
	}
	args := []string{
		"--ca=" + cfg.CA,
		"--trust-domain=" + or(cfg.TrustDomain, identity.DefaultTrustDomain),
		"--token-file=" + TokenPath + "/token",
		"--trust-bundle-file=" + BundlePath + "/ca-bundle.crt",
		"--admin-listen=:15000",
	}
	for _, in := range split(out.Annotations[InboundAnnotation]) {
		listen, app, ok := strings.Cut(in, "=")
		if !ok {
			return nil, fmt.Errorf("inject: %s %q: want LISTEN_PORT=APP_PORT", InboundAnnotation, in)
		}
		args = append(args, "--inbound=:"+listen+"=127.0.0.1:"+app)
	}
	for _, o := range split(out.Annotations[OutboundAnnotation]) {
		port, target, ok := strings.Cut(o, "=")
		if !ok {
			return nil, fmt.Errorf("inject: %s %q: want PORT=TARGET[;id=SPIFFE_ID]", OutboundAnnotation, o)
		}
		args = append(args, "--outbound=127.0.0.1:"+port+"="+strings.ReplaceAll(target, ";", ","))
	}
	out.Spec.Containers = append(out.Spec.Containers, corev1.Container{
		Name: ContainerName, Image: image, Args: args,
		Ports:          []corev1.ContainerPort{{Name: "meshid-admin", ContainerPort: 15000}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intOrName("meshid-admin")}}},
		Resources:      corev1.ResourceRequirements{Requests: requests},
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolume, MountPath: TokenPath, ReadOnly: true},
			{Name: BundleVolume, MountPath: BundlePath, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
			RunAsUser: ptr.To[int64](65532), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	})
	expiration := cfg.TokenExpirationSeconds
	if expiration < 600 {
		expiration = 600
	}
	out.Spec.Volumes = append(out.Spec.Volumes,
		corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: or(cfg.Audience, identity.DefaultAudience), ExpirationSeconds: ptr.To(expiration), Path: "token",
			}}},
		}}},
		corev1.Volume{Name: BundleVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: or(cfg.BundleConfigMap, "meshid-trust-bundle")},
			Items:                []corev1.KeyToPath{{Key: "ca-bundle.crt", Path: "ca-bundle.crt"}},
		}}},
	)
	out.Annotations[InjectedAnnotation] = image
	return out, nil
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func intOrName(name string) intstr.IntOrString { return intstr.FromString(name) }
