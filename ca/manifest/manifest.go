package manifest

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
)

// Names of what the manifest creates, and the CA's ports.
const (
	CAName          = "meshid-ca"
	IssuerSecret    = "meshid-issuer"
	BundleConfigMap = "meshid-trust-bundle"
	AnchorSecret    = "meshid-anchor" // cert-manager mode: the anchor and its key
	AnchorIssuer    = "meshid-anchor" // cert-manager mode: the CA Issuer over it
	AlertsConfigMap = "meshid-alerts"
	JWTKeySecret    = "meshid-jwt-keys" // the JWT-SVID signing keys, made by meshid-ca
	GRPCPort        = 8443
	AdminPort       = 9090
	OIDCPort        = 8445 // with JWT.OIDCIssuer: the OIDC discovery listener
)

// Options describe a control plane.
type Options struct {
	// Namespace of the control plane; "meshid" when empty.
	Namespace string
	// Image of meshid-ca. Required.
	Image string
	// Replicas of meshid-ca; 2 when 0.
	Replicas int32
	// TrustDomain, Audience and LeafTTL are passed to meshid-ca.
	TrustDomain string
	Audience    string
	LeafTTL     time.Duration
	// BundlePEM is the trust bundle: the anchors, PEM. Required.
	BundlePEM []byte
	// IssuerCertPEM and IssuerKeyPEM are the issuer, rendered as a
	// kubernetes.io/tls Secret; empty in cert-manager mode.
	IssuerCertPEM, IssuerKeyPEM []byte
	// CertManager, when set, renders cert-manager objects that keep the
	// issuer Secret fresh instead of the Secret itself.
	CertManager *CertManager
	// PrometheusOperator renders the alert rules as a PrometheusRule
	// instead of a ConfigMap holding a Prometheus rule file.
	PrometheusOperator bool
	// Webhook renders meshid-webhook, the AuthorizationPolicy CRD and the
	// CA's policy serving; nil renders none of them.
	Webhook *Webhook
	// External renders the ExternalWorkload CRD and has meshid-ca serve
	// external workloads (external.go); nil renders neither.
	External *External
	// JWT turns on JWT-SVIDs: meshid-ca keeps its signing keys in the
	// Secret JWTKeySecret, which it creates, and may touch that one
	// Secret; nil renders none of it.
	JWT *JWT
	// Federation renders the FederatedTrustDomain CRD, the CA's RBAC to
	// watch them and write their status, and --federated-trust-domains.
	Federation bool
}

// JWT configures JWT-SVIDs.
type JWT struct {
	// MaxTTL caps a JWT-SVID's lifetime (--jwt-ttl-max); 0 leaves
	// meshid-ca's default.
	MaxTTL time.Duration
	// OIDCIssuer, when set, is the issuer URL of the JWT-SVIDs, served by
	// the OIDC discovery listener on port OIDCPort (container and Service
	// port "oidc", plain HTTP: TLS is terminated in front of it).
	OIDCIssuer string
}

func (o *Options) defaults() error {
	if o.Namespace == "" {
		o.Namespace = "meshid"
	}
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	if o.TrustDomain == "" {
		o.TrustDomain = identity.DefaultTrustDomain
	}
	if o.Audience == "" {
		o.Audience = identity.DefaultAudience
	}
	if o.LeafTTL == 0 {
		o.LeafTTL = 24 * time.Hour
	}
	switch {
	case o.Image == "":
		return errors.New("manifest: an image is required")
	case len(o.BundlePEM) == 0:
		return errors.New("manifest: a trust bundle is required")
	case o.CertManager == nil && (len(o.IssuerCertPEM) == 0 || len(o.IssuerKeyPEM) == 0):
		return errors.New("manifest: an issuer, or cert-manager, is required")
	case o.CertManager != nil && (len(o.CertManager.AnchorCertPEM) == 0 || len(o.CertManager.AnchorKeyPEM) == 0):
		return errors.New("manifest: cert-manager mode needs the anchor and its key")
	}
	return nil
}

// Render builds every object, in the order they should be applied.
func Render(o Options) ([]runtime.Object, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	labels := map[string]string{"app.kubernetes.io/name": CAName, "app.kubernetes.io/part-of": "meshid"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels}
	}
	objs := []runtime.Object{
		&corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: o.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "meshid"}}},
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(CAName)},
	}
	if o.Federation {
		c, err := federationCRD()
		if err != nil {
			return nil, err
		}
		objs = append(objs, c)
	}
	objs = append(objs, caRBAC(o, meta)...)
	objs = append(objs, &corev1.ConfigMap{
		TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: meta(BundleConfigMap),
		Data: map[string]string{bundle.Key: string(o.BundlePEM)},
	})
	if o.CertManager != nil {
		cm, err := certManagerObjects(o, meta)
		if err != nil {
			return nil, err
		}
		objs = append(objs, cm...)
	} else {
		objs = append(objs, &corev1.Secret{
			TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: meta(IssuerSecret), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: o.IssuerCertPEM, corev1.TLSPrivateKeyKey: o.IssuerKeyPEM},
		})
	}
	objs = append(objs, deployment(o, meta, labels), service(o, meta, labels))
	objs = append(objs, alerts(o, meta)...)
	objs = append(objs, grafana(meta))
	if o.Webhook != nil {
		wh, err := webhookObjects(o, meta)
		if err != nil {
			return nil, err
		}
		objs = append(objs, wh...)
	}
	if o.External != nil {
		ext, err := externalObjects()
		if err != nil {
			return nil, err
		}
		objs = append(objs, ext...)
	}
	return objs, nil
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// Args are the flags the Deployment runs meshid-ca with (no --kubeconfig:
// in a pod it uses its service account).
func Args(o Options) []string {
	args := []string{
		"--namespace=" + o.Namespace,
		"--service-account=" + CAName,
		"--issuer-secret=" + IssuerSecret,
		"--trust-bundle=" + BundleConfigMap,
		"--trust-domain=" + o.TrustDomain,
		"--audience=" + o.Audience,
		"--leaf-ttl=" + o.LeafTTL.String(),
		"--listen=:" + strconv.Itoa(GRPCPort),
		"--admin-listen=:" + strconv.Itoa(AdminPort),
		"--replica=$(POD_NAME)",
	}
	if o.JWT != nil {
		args = append(args, "--jwt-key-secret="+JWTKeySecret)
		if o.JWT.MaxTTL != 0 {
			args = append(args, "--jwt-ttl-max="+o.JWT.MaxTTL.String())
		}
		if o.JWT.OIDCIssuer != "" {
			args = append(args, "--oidc-issuer="+o.JWT.OIDCIssuer, "--oidc-listen=:"+strconv.Itoa(OIDCPort))
		}
	}
	if o.Webhook != nil {
		// meshid-webhook's account may rewrite every pod; no workload runs
		// as it, and none gets a certificate for it.
		args = append(args, "--watch-policies", "--discovery", "--reserved-service-accounts="+o.Namespace+"/"+WebhookName)
	}
	if o.External != nil {
		args = append(args, externalArgs(o.External)...)
	}
	if o.Federation {
		args = append(args, "--federated-trust-domains")
	}
	return args
}

func deployment(o Options, meta func(string) metav1.ObjectMeta, labels map[string]string) *appsv1.Deployment {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("admin")}},
			PeriodSeconds: 10, FailureThreshold: 3,
		}
	}
	return &appsv1.Deployment{
		TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: meta(CAName),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(o.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr.To(intstr.FromInt32(0))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: CAName,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name: CAName, Image: o.Image, Args: Args(o),
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: append([]corev1.ContainerPort{
							{Name: "grpc", ContainerPort: GRPCPort, Protocol: corev1.ProtocolTCP},
							{Name: "admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP},
						}, oidcContainerPort(o)...),
						ReadinessProbe: probe("/ready"), LivenessProbe: probe("/live"),
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
								LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: "kubernetes.io/hostname",
							},
						}},
					}},
				},
			},
		},
	}
}

func service(o Options, meta func(string) metav1.ObjectMeta, labels map[string]string) *corev1.Service {
	ports := []corev1.ServicePort{
		{Name: "grpc", Port: GRPCPort, TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP},
		{Name: "admin", Port: AdminPort, TargetPort: intstr.FromString("admin"), Protocol: corev1.ProtocolTCP},
	}
	if len(oidcContainerPort(o)) > 0 {
		ports = append(ports, corev1.ServicePort{Name: "oidc", Port: OIDCPort, TargetPort: intstr.FromString("oidc"), Protocol: corev1.ProtocolTCP})
	}
	return &corev1.Service{
		TypeMeta: typeMeta("v1", "Service"), ObjectMeta: meta(CAName),
		Spec: corev1.ServiceSpec{Selector: labels, Ports: ports},
	}
}

// oidcContainerPort is the OIDC listener's port, when it is on.
func oidcContainerPort(o Options) []corev1.ContainerPort {
	if o.JWT == nil || o.JWT.OIDCIssuer == "" {
		return nil
	}
	return []corev1.ContainerPort{{Name: "oidc", ContainerPort: OIDCPort, Protocol: corev1.ProtocolTCP}}
}

// String describes the options for the install summary.
func (o Options) String() string {
	return fmt.Sprintf("namespace %s, %d replicas of %s, trust domain %s", o.Namespace, o.Replicas, o.Image, o.TrustDomain)
}
