package manifest

import (
	"fmt"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/meshid/meshid/api/policy/crd"
)

// Names of the webhook's objects.
const (
	WebhookName     = "meshid-webhook"
	WebhookCASecret = "meshid-webhook-ca"
	WebhookPort     = 9443
)

// InjectorConfig and ValidationConfig name the cluster-wide webhook
// configurations; installs in namespaces other than meshid get their own.
func InjectorConfig(ns string) string   { return clusterName("meshid-injector", ns) }
func ValidationConfig(ns string) string { return clusterName("meshid-policy-validation", ns) }

func clusterName(base, ns string) string {
	if ns == "meshid" {
		return base
	}
	return base + "-" + ns
}

// Webhook describes meshid-webhook; nil renders none.
type Webhook struct {
	// Image of meshid-webhook and of the proxy it injects. Required.
	Image, ProxyImage string
}

// webhookObjects renders the AuthorizationPolicy CRD, meshid-webhook with
// least-privilege RBAC (rbac.go), and its webhook configurations: injection never
// blocks a pod (failurePolicy Ignore) and never touches kube-system or the
// control plane's namespace; policy validation fails closed, on meshid's
// own resources only.
func webhookObjects(o Options, meta func(string) metav1.ObjectMeta) ([]runtime.Object, error) {
	var crdObj map[string]any
	if err := yaml.Unmarshal(crd.AuthorizationPolicy, &crdObj); err != nil {
		return nil, fmt.Errorf("manifest: the CRD: %w", err)
	}
	labels := map[string]string{"app.kubernetes.io/name": WebhookName, "app.kubernetes.io/part-of": "meshid"}
	wm := meta(WebhookName)
	wm.Labels = labels
	svc := &admissionregistrationv1.ServiceReference{Name: WebhookName, Namespace: o.Namespace, Port: ptr.To[int32](443)}
	excluded := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", o.Namespace},
	}}}
	ignore, fail := admissionregistrationv1.Ignore, admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	args := []string{
		"--namespace=" + o.Namespace, fmt.Sprintf("--listen=:%d", WebhookPort),
		"--proxy-image=" + o.Webhook.ProxyImage, fmt.Sprintf("--ca-address=%s.%s.svc:%d", CAName, o.Namespace, GRPCPort),
		"--trust-domain=" + o.TrustDomain, "--audience=" + o.Audience,
		"--mutating-webhook=" + InjectorConfig(o.Namespace), "--validating-webhook=" + ValidationConfig(o.Namespace),
	}
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	if o.CertManager != nil {
		args = append(args, "--cert-dir=/var/run/meshid-webhook")
		volumes = []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: WebhookTLSSecret}}}}
		mounts = []corev1.VolumeMount{{Name: "tls", MountPath: "/var/run/meshid-webhook", ReadOnly: true}}
	}
	objs := []runtime.Object{
		&unstructured.Unstructured{Object: crdObj},
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: wm},
	}
	objs = append(objs, webhookRBAC(o, meta, labels)...)
	objs = append(objs,
		&appsv1.Deployment{TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: wm, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: WebhookName, Volumes: volumes,
				SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{
					Name: WebhookName, Image: o.Webhook.Image,
					Args: args, VolumeMounts: mounts,
					Ports:          []corev1.ContainerPort{{Name: "https", ContainerPort: WebhookPort}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
			}},
		}},
		&corev1.Service{TypeMeta: typeMeta("v1", "Service"), ObjectMeta: wm, Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https")}},
		}},
		&admissionregistrationv1.MutatingWebhookConfiguration{
			TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"), ObjectMeta: metav1.ObjectMeta{Name: InjectorConfig(o.Namespace), Labels: labels},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: "inject.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: withPath(svc, "/inject")},
				Rules:             []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
				NamespaceSelector: excluded, FailurePolicy: &ignore, SideEffects: &none,
				AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
			}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"), ObjectMeta: metav1.ObjectMeta{Name: ValidationConfig(o.Namespace), Labels: labels},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name: "validate.policy.meshid.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: withPath(svc, "/validate")},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"meshid.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"authorizationpolicies"}},
				}},
				FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
			}},
		},
	)
	if o.CertManager != nil {
		objs = append(objs, webhookCertManager(o, meta)...)
	}
	return objs, nil
}

// WebhookTLSSecret holds the webhook's serving certificate in
// cert-manager mode.
const WebhookTLSSecret = "meshid-webhook-tls"

// webhookCertManager: a self-signed webhook CA (apart from the mesh's
// anchor: the API server trusting the webhook must not mean trusting a
// workload) and a serving certificate from it, renewed by cert-manager;
// meshid-webhook reads it from the mounted Secret and syncs ca.crt into
// the caBundles.
func webhookCertManager(o Options, meta func(string) metav1.ObjectMeta) []runtime.Object {
	ref := func(name string) cmmeta.IssuerReference {
		return cmmeta.IssuerReference{Name: name, Kind: cmapi.IssuerKind, Group: "cert-manager.io"}
	}
	return []runtime.Object{
		&cmapi.Issuer{TypeMeta: typeMeta("cert-manager.io/v1", "Issuer"), ObjectMeta: meta("meshid-webhook-selfsigned"),
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}}},
		&cmapi.Certificate{TypeMeta: typeMeta("cert-manager.io/v1", "Certificate"), ObjectMeta: meta(WebhookCASecret), Spec: cmapi.CertificateSpec{
			CommonName: "meshid webhook CA", IsCA: true, SecretName: WebhookCASecret, IssuerRef: ref("meshid-webhook-selfsigned"),
			Duration:   &metav1.Duration{Duration: 5 * 365 * 24 * time.Hour},
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
		}},
		&cmapi.Issuer{TypeMeta: typeMeta("cert-manager.io/v1", "Issuer"), ObjectMeta: meta("meshid-webhook-ca"),
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: WebhookCASecret}}}},
		&cmapi.Certificate{TypeMeta: typeMeta("cert-manager.io/v1", "Certificate"), ObjectMeta: meta(WebhookTLSSecret), Spec: cmapi.CertificateSpec{
			DNSNames:   []string{WebhookName + "." + o.Namespace + ".svc", WebhookName + "." + o.Namespace + ".svc.cluster.local"},
			SecretName: WebhookTLSSecret, IssuerRef: ref("meshid-webhook-ca"),
			Duration: &metav1.Duration{Duration: 7 * 24 * time.Hour}, RenewBefore: &metav1.Duration{Duration: 3 * 24 * time.Hour},
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
			Usages:     []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
		}},
	}
}

func withPath(s *admissionregistrationv1.ServiceReference, path string) *admissionregistrationv1.ServiceReference {
	c := *s
	c.Path = &path
	return &c
}
