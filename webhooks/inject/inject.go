// Package inject decides whether a pod gets the meshid-proxy sidecar and
// builds the injected pod: the meshid-init container that redirects the
// pod's TCP to the proxy, the proxy container (transparent, with the pod's
// HTTP probes), a projected service-account token for the CA's audience,
// and the trust bundle. Injection is idempotent and recorded in
// annotations.
//
// It imports only identity, for the default trust domain and audience.
package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/sidecar"
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
	// The transparent annotations (skipped ports and CIDRs, transparent)
	// are package sidecar's: meshid-ca's discovery reads them too.
	// EgressLabel on a namespace sets its pods' egress mode: allow-unmeshed
	// (the default) or deny-unmeshed (connections to destinations outside
	// the mesh are refused).
	EgressLabel = "meshid.dev/egress"
	// DefaultModeKey, as a pod annotation or else a namespace label, sets
	// the policy mode of the pod's inbound ports that no
	// AuthorizationPolicy names (a policy mode: deny, all-authenticated,
	// cluster-authenticated, all-unauthenticated); it overrides
	// Config.DefaultMode.
	DefaultModeKey = "meshid.dev/default-mode"
	// ImageAnnotation, CPUAnnotation, MemoryAnnotation override the defaults.
	ImageAnnotation  = "meshid.dev/proxy-image"
	CPUAnnotation    = "meshid.dev/proxy-cpu"
	MemoryAnnotation = "meshid.dev/proxy-memory"
)

// Names of what is injected.
const (
	ContainerName = "meshid-proxy"
	InitName      = "meshid-init"
	TokenVolume   = "meshid-token"
	BundleVolume  = "meshid-trust-bundle"
	TokenPath     = "/var/run/secrets/meshid"
	BundlePath    = "/var/run/meshid"
	// RedirectVolume is an emptyDir meshid-init writes the redirect's
	// state to (RedirectState) and the proxy reads it from, for /identity.
	RedirectVolume = "meshid-redirect"
	RedirectPath   = "/var/run/meshid-redirect"
	RedirectState  = RedirectPath + "/state.json"
)

// Config is what injection puts in.
type Config struct {
	// Image of meshid-proxy. Required.
	Image string
	// InitImage holds meshid-init (on its PATH); empty means Image.
	InitImage string
	// CA is the address of meshid-ca. Required.
	CA string
	// TrustDomain, Audience, BundleConfigMap as installed.
	TrustDomain, Audience, BundleConfigMap string
	// TokenExpirationSeconds of the projected token; Kubernetes' minimum
	// is 600.
	TokenExpirationSeconds int64
	// CPU and Memory requests of the proxy.
	CPU, Memory string
	// DefaultMode is the policy mode of inbound ports no AuthorizationPolicy
	// names, for pods and namespaces that do not set DefaultModeKey; empty
	// means policy.AllUnauthenticated, so that injecting a pod breaks none
	// of its callers (meshed callers get mTLS all the same, unmeshed ones
	// still reach it in plain) until a policy or a stricter default says
	// otherwise.
	DefaultMode policy.Mode
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

// Pod returns a copy of pod with meshid-init, the sidecar, their volumes
// and the annotations; namespaceLabels are the pod's namespace's (its
// egress mode). The caller has decided to inject.
func Pod(pod *corev1.Pod, namespaceLabels map[string]string, cfg Config) (*corev1.Pod, error) {
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
		"--admin-listen=:" + strconv.Itoa(sidecar.AdminPort),
	}
	skipInbound := split(out.Annotations[sidecar.SkipInboundPortsAnnotation])
	for _, in := range split(out.Annotations[InboundAnnotation]) {
		listen, app, ok := strings.Cut(in, "=")
		if !ok {
			return nil, fmt.Errorf("inject: %s %q: want LISTEN_PORT=APP_PORT", InboundAnnotation, in)
		}
		args = append(args, "--inbound=:"+listen+"=127.0.0.1:"+app)
		skipInbound = append(skipInbound, listen) // an explicit listener terminates its own mTLS
	}
	for _, o := range split(out.Annotations[OutboundAnnotation]) {
		port, target, ok := strings.Cut(o, "=")
		if !ok {
			return nil, fmt.Errorf("inject: %s %q: want PORT=TARGET[;id=SPIFFE_ID]", OutboundAnnotation, o)
		}
		args = append(args, "--outbound=127.0.0.1:"+port+"="+strings.ReplaceAll(target, ";", ","))
	}
	// The policy of every port comes from the AuthorizationPolicies that
	// select the pod, and the default mode for the ports none names; the
	// kubelet's probes pass as plain even in mode deny.
	mode, where := cfg.DefaultMode, "Config.DefaultMode"
	if v, ok := namespaceLabels[DefaultModeKey]; ok {
		mode, where = policy.Mode(v), "namespace label "+DefaultModeKey
	}
	if v, ok := out.Annotations[DefaultModeKey]; ok {
		mode, where = policy.Mode(v), "pod annotation "+DefaultModeKey
	}
	if mode == "" {
		mode = policy.AllUnauthenticated
	}
	if err := mode.Validate(); err != nil {
		return nil, fmt.Errorf("inject: %s: %w", where, err)
	}
	args = append(args, "--transparent", "--redirect-state-file="+RedirectState, "--policy-from-ca", "--default-mode="+string(mode))
	switch egress := namespaceLabels[EgressLabel]; egress {
	case "":
	case "allow-unmeshed", "deny-unmeshed":
		args = append(args, "--egress="+egress)
	default:
		return nil, fmt.Errorf("inject: namespace label %s=%q: want allow-unmeshed or deny-unmeshed", EgressLabel, egress)
	}
	for _, p := range probes(out) {
		args = append(args, "--probe="+p)
	}
	initArgs := []string{"--proxy-uid=" + strconv.Itoa(sidecar.ProxyUID), "--admin-port=" + strconv.Itoa(sidecar.AdminPort), "--state-file=" + RedirectState}
	for flag, list := range map[string][]string{
		"--skip-inbound-ports":  skipInbound,
		"--skip-outbound-ports": split(out.Annotations[sidecar.SkipOutboundPortsAnnotation]),
		"--skip-outbound-cidrs": split(out.Annotations[sidecar.SkipOutboundCIDRsAnnotation]),
	} {
		if len(list) > 0 {
			initArgs = append(initArgs, flag+"="+strings.Join(list, ","))
		}
	}
	slices.Sort(initArgs[3:])
	// meshid-init runs first, as root with CAP_NET_ADMIN only (a non-root
	// user would not hold the capability): it programs the pod's network
	// namespace before any other container can open a connection.
	out.Spec.InitContainers = append([]corev1.Container{{
		Name: InitName, Image: or(cfg.InitImage, image), Command: []string{InitName}, Args: initArgs,
		Resources:    corev1.ResourceRequirements{Requests: requests},
		VolumeMounts: []corev1.VolumeMount{{Name: RedirectVolume, MountPath: RedirectPath}},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(false),
			RunAsUser:    ptr.To[int64](0),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}},
		},
	}}, out.Spec.InitContainers...)
	out.Spec.Containers = append(out.Spec.Containers, corev1.Container{
		Name: ContainerName, Image: image, Args: args,
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		},
		Ports:          []corev1.ContainerPort{{Name: "meshid-admin", ContainerPort: sidecar.AdminPort}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intOrName("meshid-admin")}}},
		Resources:      corev1.ResourceRequirements{Requests: requests},
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolume, MountPath: TokenPath, ReadOnly: true},
			{Name: BundleVolume, MountPath: BundlePath, ReadOnly: true},
			{Name: RedirectVolume, MountPath: RedirectPath, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
			RunAsUser: ptr.To[int64](sidecar.ProxyUID), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
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
		corev1.Volume{Name: RedirectVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi")),
		}}},
	)
	out.Annotations[InjectedAnnotation] = image
	out.Annotations[sidecar.TransparentAnnotation] = "enabled"
	if len(skipInbound) > 0 {
		out.Annotations[sidecar.SkipInboundPortsAnnotation] = strings.Join(skipInbound, ",")
	}
	return out, nil
}

// probes are the plain HTTP probes of pod's containers, as PORT=PATH, with
// named ports resolved; the proxy admits exactly these from the node.
// HTTPS probes are the app's own TLS: their ports must be skipped.
func probes(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Spec.Containers {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
				continue
			}
			port := pr.HTTPGet.Port.IntValue()
			if pr.HTTPGet.Port.Type == intstr.String {
				port = 0
				for _, cp := range c.Ports {
					if cp.Name == pr.HTTPGet.Port.StrVal {
						port = int(cp.ContainerPort)
					}
				}
			}
			if port <= 0 {
				continue
			}
			path := pr.HTTPGet.Path
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			out = append(out, strconv.Itoa(port)+"="+path)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
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
