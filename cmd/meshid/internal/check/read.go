package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	federationv1alpha1 "github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/jwtkey"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
	"github.com/meshid/meshid/rotation/health"
)

// reader reads the cluster and the proxies into health's Input.
type reader struct {
	o *Options
	c *kube.Clients
}

// preflightTimeout bounds the first request: an API server that does not
// answer is reported, not waited for.
const preflightTimeout = 10 * time.Second

// input reads everything the checks look at, as of now. The preflight
// comes first; what it finds missing or denied is not read.
func (r reader) input(ctx context.Context, now time.Time) health.Input {
	o, client := r.o, r.c.Kube
	in := health.Input{
		Now:         now,
		TrustDomain: spiffeid.RequireTrustDomainFromString(o.TrustDomain),
		Namespace:   o.Namespace, Kubeconfig: o.Cluster.Kubeconfig, Context: o.Cluster.Context,
		BundleName: o.Namespace + "/" + o.Bundle, IssuerName: o.Namespace + "/" + o.Issuer,
		BundleObject: o.Bundle, IssuerObject: o.Issuer,
		WarnWithin: o.WarnWithin, IssuerWarnWithin: o.IssuerWarnWithin,
		Reports: &health.Reports{Name: o.Namespace + "/" + fleet.ConfigMapPrefix + "*"},
	}
	if o.Deployment != "" {
		in.CA = &health.Replicas{Name: o.Namespace + "/" + o.Deployment}
	}
	in.Preflight = r.preflight(ctx)
	if in.Preflight.APIErr != nil || in.Preflight.NamespaceMissing {
		return in
	}
	allowed := func(n health.Need) bool {
		return !slices.ContainsFunc(in.Preflight.Access, func(a health.Access) bool { return a.Need == n && !a.Allowed })
	}

	if allowed(health.NeedBundle) {
		if cm, err := client.CoreV1().ConfigMaps(o.Namespace).Get(ctx, o.Bundle, metav1.GetOptions{}); err != nil {
			in.BundleErr = readError("ConfigMap", err)
		} else if pem, ok := cm.Data[bundle.Key]; !ok {
			in.BundleErr = fmt.Errorf("the ConfigMap has no key %s", bundle.Key)
		} else {
			in.BundlePEM = []byte(pem)
		}
	}
	certificate := ""
	if allowed(health.NeedIssuer) {
		if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, o.Issuer, metav1.GetOptions{}); err != nil {
			in.IssuerErr = readError("Secret", err)
		} else {
			in.IssuerCert, in.IssuerKey = s.Data["tls.crt"], s.Data["tls.key"]
			certificate = s.Annotations["cert-manager.io/certificate-name"]
		}
	}
	if r.c.Dynamic != nil {
		in.CertManager, in.IssuerRenewBefore = r.certManager(ctx, certificate)
	}
	in.JWT = r.jwtKeys(ctx)
	if allowed(health.NeedWebhook) {
		if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, manifest.WebhookCASecret, metav1.GetOptions{}); err == nil {
			in.WebhookCAPEM = s.Data["tls.crt"]
			if mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, manifest.InjectorConfig(o.Namespace), metav1.GetOptions{}); err == nil && len(mwc.Webhooks) > 0 {
				in.WebhookCABundle = mwc.Webhooks[0].ClientConfig.CABundle
			}
		}
		if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, manifest.WebhookTLSSecret, metav1.GetOptions{}); err == nil {
			in.WebhookCertPEM = s.Data["tls.crt"]
		}
	}
	if in.CA != nil && allowed(health.NeedDeployment) {
		if d, err := client.AppsV1().Deployments(o.Namespace).Get(ctx, o.Deployment, metav1.GetOptions{}); err != nil {
			in.CA.Err = readError("Deployment", err)
		} else {
			in.CA.Ready = d.Status.ReadyReplicas
			in.CA.Desired = 1
			if d.Spec.Replicas != nil {
				in.CA.Desired = *d.Spec.Replicas
			}
		}
	}
	if allowed(health.NeedReports) {
		in.Reports.All, in.Reports.Err = r.reports(ctx)
	}
	if r.c.Dynamic != nil {
		in.Federated = r.federated(ctx)
	}
	for _, addr := range o.Proxies {
		in.Proxies = append(in.Proxies, proxyIdentity(ctx, addr))
	}
	return in
}

// federated lists the FederatedTrustDomains; nil when their CRD is not
// installed (no federation, no rows) or check may not list them (an
// operator without federation's read access gets no rows, as without it).
func (r reader) federated(ctx context.Context) *health.Federated {
	list, err := r.c.Dynamic.Resource(federationv1alpha1.Resource).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		return nil
	case err != nil:
		return &health.Federated{Err: readError("FederatedTrustDomain", err)}
	}
	f := &health.Federated{}
	for _, u := range list.Items {
		var ftd federationv1alpha1.FederatedTrustDomain
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ftd); err != nil {
			return &health.Federated{Err: fmt.Errorf("FederatedTrustDomain %s does not decode: %w", u.GetName(), err)}
		}
		f.Items = append(f.Items, ftd)
	}
	return f
}

// preflight asks whether the API server answers, the namespace exists, and
// RBAC allows each read check makes.
func (r reader) preflight(ctx context.Context) *health.Preflight {
	o, client := r.o, r.c.Kube
	p := &health.Preflight{}
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	_, err := client.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
	var answered apierrors.APIStatus
	switch {
	case err == nil:
	case apierrors.IsUnauthorized(err):
		p.APIErr = fmt.Errorf("the API server refuses check's credentials: %w", err)
	case apierrors.IsNotFound(err):
		p.NamespaceMissing = true
	case errors.As(err, &answered):
		p.NamespaceErr = err
	default:
		p.APIErr = fmt.Errorf("cannot reach the API server: %w", err)
	}
	if p.APIErr != nil {
		return p
	}
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		p.APIErr = fmt.Errorf("the server answers, but not as a Kubernetes API server: %w", err)
		return p
	}
	p.Version = v.GitVersion
	if p.NamespaceMissing {
		return p
	}
	if ssr, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil {
		p.User = ssr.Status.UserInfo.Username
	}
	for _, a := range r.accesses() {
		attrs := &authorizationv1.ResourceAttributes{Verb: a.Verb, Group: a.Group, Resource: a.Resource, Name: a.Name}
		if !a.Cluster {
			attrs.Namespace = o.Namespace
		}
		res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}}, metav1.CreateOptions{})
		if err != nil {
			p.Access, p.AccessErr = nil, fmt.Errorf("SelfSubjectAccessReview: %w", err)
			break
		}
		a.Allowed, a.Reason = res.Status.Allowed, res.Status.Reason
		p.Access = append(p.Access, a)
	}
	return p
}

// accesses are the reads check makes.
func (r reader) accesses() []health.Access {
	o := r.o
	as := []health.Access{
		{Verb: "get", Resource: "configmaps", Name: o.Bundle, Need: health.NeedBundle},
		{Verb: "get", Resource: "secrets", Name: o.Issuer, Need: health.NeedIssuer},
		{Verb: "list", Resource: "configmaps", Need: health.NeedReports},
	}
	if o.Deployment != "" {
		as = append(as, health.Access{Verb: "get", Group: "apps", Resource: "deployments", Name: o.Deployment, Need: health.NeedDeployment, Optional: true})
	}
	return append(as,
		health.Access{Verb: "get", Resource: "secrets", Name: manifest.WebhookCASecret, Need: health.NeedWebhook, Optional: true},
		health.Access{Verb: "get", Resource: "secrets", Name: manifest.WebhookTLSSecret, Need: health.NeedWebhook, Optional: true},
		health.Access{Verb: "get", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: manifest.InjectorConfig(o.Namespace), Cluster: true, Need: health.NeedWebhook, Optional: true},
	)
}

func readError(kind string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found", kind)
	}
	return fmt.Errorf("cannot read the %s: %w", kind, err)
}

// reports reads every replica's fleet report.
func (r reader) reports(ctx context.Context) ([]fleet.Report, error) {
	cms, err := r.c.Kube.CoreV1().ConfigMaps(r.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: fleet.Label + "=true"})
	if err != nil {
		return nil, fmt.Errorf("cannot list the fleet reports: %w", err)
	}
	var out []fleet.Report
	for _, cm := range cms.Items {
		var rep fleet.Report
		if json.Unmarshal([]byte(cm.Data[fleet.ConfigMapKey]), &rep) == nil {
			out = append(out, rep)
		}
	}
	return out, nil
}

var (
	certificateGVR   = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}
	issuerGVR        = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "issuers"}
	clusterIssuerGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "clusterissuers"}
)

// certManager reads the cert-manager Certificate that writes the issuer
// Secret (the one the Secret's annotation names, or any whose secretName
// is the Secret), its Issuer and that Issuer's anchor Secret; nil when
// cert-manager does not manage the issuer. It returns the Certificate's
// renewBefore too.
func (r reader) certManager(ctx context.Context, annotated string) (*health.CertManager, time.Duration) {
	o := r.o
	list, err := r.c.Dynamic.Resource(certificateGVR).Namespace(o.Namespace).List(ctx, metav1.ListOptions{})
	var found *unstructured.Unstructured
	if err == nil {
		for i, u := range list.Items {
			secret, _, _ := unstructured.NestedString(u.Object, "spec", "secretName")
			if u.GetName() == annotated || (found == nil && secret == o.Issuer) {
				found = &list.Items[i]
			}
		}
	}
	if found == nil {
		if annotated == "" {
			return nil, 0 // not cert-manager's, or no cert-manager at all
		}
		if err == nil {
			err = errors.New("no such Certificate")
		} else if apierrors.IsNotFound(err) {
			err = fmt.Errorf("cert-manager's Certificate API is not served: %w", err)
		}
		return &health.CertManager{Certificate: health.Resource{Kind: "Certificate", Namespace: o.Namespace, Name: annotated, Err: err, Forbidden: apierrors.IsForbidden(err)}}, 0
	}
	cm := &health.CertManager{Certificate: health.Resource{Kind: "Certificate", Namespace: o.Namespace, Name: found.GetName(), Ready: ready(found)}}
	s, _, _ := unstructured.NestedString(found.Object, "spec", "renewBefore")
	renewBefore, _ := time.ParseDuration(s)

	name, _, _ := unstructured.NestedString(found.Object, "spec", "issuerRef", "name")
	kind, _, _ := unstructured.NestedString(found.Object, "spec", "issuerRef", "kind")
	if kind == "" {
		kind = "Issuer"
	}
	iss := &health.Resource{Kind: kind, Name: name}
	var u *unstructured.Unstructured
	switch kind {
	case "Issuer":
		iss.Namespace = o.Namespace
		u, err = r.c.Dynamic.Resource(issuerGVR).Namespace(o.Namespace).Get(ctx, name, metav1.GetOptions{})
	case "ClusterIssuer":
		u, err = r.c.Dynamic.Resource(clusterIssuerGVR).Get(ctx, name, metav1.GetOptions{})
	default:
		return cm, renewBefore // an external issuer: its readiness is its own
	}
	cm.Issuer = iss
	if err != nil {
		iss.Err, iss.Forbidden = readError(kind, err), apierrors.IsForbidden(err)
		return cm, renewBefore
	}
	iss.Ready = ready(u)
	if secret, ok, _ := unstructured.NestedString(u.Object, "spec", "ca", "secretName"); ok && kind == "Issuer" {
		as := &health.AnchorSecret{Namespace: o.Namespace, Name: secret}
		if s, err := r.c.Kube.CoreV1().Secrets(o.Namespace).Get(ctx, secret, metav1.GetOptions{}); err != nil {
			as.Err, as.Forbidden = readError("Secret", err), apierrors.IsForbidden(err)
		} else {
			as.CertPEM, as.HasKey = s.Data["tls.crt"], len(s.Data["tls.key"]) > 0
		}
		cm.AnchorSecret = as
	}
	return cm, renewBefore
}

// ready is a cert-manager object's Ready condition; nil when it has none.
func ready(u *unstructured.Unstructured) *health.Condition {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return strings.TrimSpace(s) }
		return &health.Condition{Status: str("status"), Reason: str("reason"), Message: str("message")}
	}
	return nil
}

// proxyIdentity asks a proxy's admin endpoint for its live certificate.
func proxyIdentity(ctx context.Context, addr string) health.Proxy {
	p := health.Proxy{Addr: addr}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/identity", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.Err = fmt.Errorf("cannot reach /identity: %w", err)
		return p
	}
	defer resp.Body.Close()
	var doc struct {
		Chain    string `json:"chain_pem"`
		Bundle   string `json:"bundle_sha256"`
		Redirect struct {
			Mode     string `json:"mode"`
			Present  bool   `json:"present"`
			Matching bool   `json:"matching"`
			Problem  string `json:"problem"`
		} `json:"redirect"`
		Discovery *struct {
			Fresh      bool      `json:"fresh"`
			LastUpdate time.Time `json:"last_update"`
			BrokeAt    time.Time `json:"broke_at"`
		} `json:"discovery"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		p.Err = fmt.Errorf("/identity did not answer JSON: %w", err)
		return p
	}
	p.BundleSHA256 = doc.Bundle
	p.Mode = doc.Redirect.Mode
	p.Redirect = health.ProxyRedirect{Present: doc.Redirect.Present, Matching: doc.Redirect.Matching, Problem: doc.Redirect.Problem}
	if d := doc.Discovery; d != nil {
		p.Discovery = &health.ProxyDiscovery{Fresh: d.Fresh, LastUpdate: d.LastUpdate, BrokeAt: d.BrokeAt}
	}
	if doc.Chain != "" {
		certs, err := certinfo.Parse([]byte(doc.Chain))
		if err != nil {
			p.Err = fmt.Errorf("/identity chain: %w", err)
			return p
		}
		p.Chain = certs
	}
	return p
}

// jwtKeys reads the JWT-SVID key Secret's key IDs and windows (the
// private keys are parsed, to check them, and dropped); nil when there is
// none (JWT-SVIDs are off) or check may not read it (an optional read: the
// replicas' rows still compare what they sign with and publish).
func (r reader) jwtKeys(ctx context.Context) *health.JWTKeys {
	name := r.o.Namespace + "/" + manifest.JWTKeySecret
	s, err := r.c.Kube.CoreV1().Secrets(r.o.Namespace).Get(ctx, manifest.JWTKeySecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		return nil
	case err != nil:
		return &health.JWTKeys{Name: name, ReadErr: readError("Secret", err)}
	}
	keys, err := jwtkey.Unmarshal(s.Data[jwtkey.DataKey])
	out := &health.JWTKeys{Name: name, Err: err}
	for _, k := range keys {
		out.Keys = append(out.Keys, health.JWTKey{ID: k.ID, Created: k.Created, NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	return out
}
