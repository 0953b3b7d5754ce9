package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshid/meshid/bundle"
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

// input reads everything the checks look at, as of now.
func (r reader) input(ctx context.Context, now time.Time) health.Input {
	o, client := r.o, r.c.Kube
	in := health.Input{
		Now:         now,
		TrustDomain: spiffeid.RequireTrustDomainFromString(o.TrustDomain),
		BundleName:  o.Namespace + "/" + o.Bundle, IssuerName: o.Namespace + "/" + o.Issuer,
		WarnWithin: o.WarnWithin, IssuerWarnWithin: o.IssuerWarnWithin,
	}
	if cm, err := client.CoreV1().ConfigMaps(o.Namespace).Get(ctx, o.Bundle, metav1.GetOptions{}); err != nil {
		in.BundleErr = readError("ConfigMap", err)
	} else if pem, ok := cm.Data[bundle.Key]; !ok {
		in.BundleErr = fmt.Errorf("the ConfigMap has no key %s", bundle.Key)
	} else {
		in.BundlePEM = []byte(pem)
	}
	if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, o.Issuer, metav1.GetOptions{}); err != nil {
		in.IssuerErr = readError("Secret", err)
	} else {
		in.IssuerCert, in.IssuerKey = s.Data["tls.crt"], s.Data["tls.key"]
		if name := s.Annotations["cert-manager.io/certificate-name"]; name != "" {
			in.IssuerRenewBefore = r.renewBefore(ctx, name)
		}
	}
	if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, manifest.WebhookCASecret, metav1.GetOptions{}); err == nil {
		in.WebhookCAPEM = s.Data["tls.crt"]
		if mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, manifest.InjectorConfig(o.Namespace), metav1.GetOptions{}); err == nil && len(mwc.Webhooks) > 0 {
			in.WebhookCABundle = mwc.Webhooks[0].ClientConfig.CABundle
		}
	}
	if s, err := client.CoreV1().Secrets(o.Namespace).Get(ctx, manifest.WebhookTLSSecret, metav1.GetOptions{}); err == nil {
		in.WebhookCertPEM = s.Data["tls.crt"]
	}
	if o.Deployment != "" {
		ca := &health.Replicas{Name: o.Namespace + "/" + o.Deployment}
		if d, err := client.AppsV1().Deployments(o.Namespace).Get(ctx, o.Deployment, metav1.GetOptions{}); err != nil {
			ca.Err = readError("Deployment", err)
		} else {
			ca.Ready = d.Status.ReadyReplicas
			ca.Desired = 1
			if d.Spec.Replicas != nil {
				ca.Desired = *d.Spec.Replicas
			}
		}
		in.CA = ca
	}
	for _, addr := range o.Proxies {
		in.Proxies = append(in.Proxies, proxyIdentity(ctx, addr))
	}
	return in
}

func readError(kind string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found", kind)
	}
	return fmt.Errorf("cannot read the %s: %w", kind, err)
}

var certificateGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}

// renewBefore reads a cert-manager Certificate's renewBefore, or 0.
func (r reader) renewBefore(ctx context.Context, name string) time.Duration {
	u, err := r.c.Dynamic.Resource(certificateGVR).Namespace(r.o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0
	}
	s, _, _ := unstructured.NestedString(u.Object, "spec", "renewBefore")
	d, _ := time.ParseDuration(s)
	return d
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
		Chain  string `json:"chain_pem"`
		Bundle string `json:"bundle_sha256"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		p.Err = fmt.Errorf("/identity did not answer JSON: %w", err)
		return p
	}
	p.BundleSHA256 = doc.Bundle
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
