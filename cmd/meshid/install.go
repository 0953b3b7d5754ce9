package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/issuer"
)

type installOptions struct {
	namespace, image      string
	replicas              int32
	trustDomain, audience string
	leafTTL               time.Duration
	certManager           bool
	anchorCert, anchorKey string
	issuerCert, issuerKey string
	anchorTTL, issuerTTL  time.Duration
	writeAnchorKey        string
	prometheusOperator    bool
	webhook               bool
	webhookImage          string
	proxyImage            string
	apply                 bool
	kubeconfig            string
	output                string
	generated             bool // the anchor is new
	now                   func() time.Time
	stderr                io.Writer
}

func (o *installOptions) validate() error {
	own := o.issuerCert != "" || o.issuerKey != ""
	switch {
	case o.output != "yaml" && o.output != "json":
		return cli.Usagef("-o %q: use yaml or json", o.output)
	case o.certManager && own:
		return cli.Usagef("--cert-manager manages the issuer itself: drop --issuer-cert/--issuer-key (give it --anchor-cert and --anchor-key, or neither to generate an anchor)")
	case own && (o.issuerCert == "" || o.issuerKey == "" || o.anchorCert == ""):
		return cli.Usagef("your own material takes --anchor-cert, --issuer-cert and --issuer-key together")
	case o.certManager && (o.anchorCert == "") != (o.anchorKey == ""):
		return cli.Usagef("--cert-manager with your own anchor takes --anchor-cert and --anchor-key together")
	case !o.certManager && !own && (o.anchorCert != "" || o.anchorKey != ""):
		return cli.Usagef("--anchor-cert alone is not enough: add --issuer-cert and --issuer-key, or --cert-manager with --anchor-key")
	case o.writeAnchorKey != "" && (own || o.anchorCert != ""):
		return cli.Usagef("--write-anchor-key only applies when install generates the anchor")
	case o.replicas < 1:
		return cli.Usagef("--replicas must be at least 1")
	}
	if _, err := spiffeid.TrustDomainFromString(o.trustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
	}
	return nil
}

func newInstallCommand() *cobra.Command {
	o := &installOptions{now: time.Now}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Render (or apply) the meshid control plane",
		Long: strings.TrimSpace(`
install renders the whole meshid control plane as YAML for kubectl apply -f -
(or applies it itself with --apply, by server-side apply): the namespace, the
meshid-ca service account with least-privilege RBAC (create TokenReviews; get,
list and watch its one issuer Secret and one bundle ConfigMap; Events), the
meshid-ca Deployment (2 replicas, probes, resource requests, non-root,
read-only root filesystem) and Service, the trust-bundle ConfigMap, and the
expiry alert rules (a Prometheus rule file in a ConfigMap, or a PrometheusRule
with --prometheus-operator).

Trust material comes one of three ways:
  --cert-manager              cert-manager keeps the issuer fresh: a CA Issuer
                              over the anchor (--anchor-cert/--anchor-key, or a
                              generated one) and a Certificate for the issuer
                              (isCA, ECDSA P-256, 48h, renewBefore 25h,
                              rotationPolicy Always) written to meshid-issuer
  --anchor-cert --issuer-cert --issuer-key
                              your own anchor and issuer
  neither                     a NEW anchor (--anchor-ttl) and issuer
                              (--issuer-ttl) are generated; their fingerprint is
                              printed, and the anchor key is discarded unless
                              --write-anchor-key saves it
Inconsistent material is refused before anything is rendered: an issuer that
does not chain to the anchor, an expired or non-CA certificate, a key that does
not match.

` + cli.ExitCodes),
		Example: `  meshid install --cert-manager | kubectl apply -f -
  meshid install --anchor-cert anchor.crt --issuer-cert issuer.crt --issuer-key issuer.key --apply`,
		Args:    cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.stderr = cmd.ErrOrStderr()
			return runInstall(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.namespace, "namespace", "n", "meshid", "namespace of the control plane")
	fs.StringVar(&o.image, "image", "ghcr.io/meshid/meshid-ca:latest", "meshid-ca container image")
	fs.Int32Var(&o.replicas, "replicas", 2, "meshid-ca replicas")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&o.audience, "audience", "identity.meshid.dev", "token audience meshid-ca requires")
	fs.DurationVar(&o.leafTTL, "leaf-ttl", 24*time.Hour, "workload certificate lifetime")
	fs.BoolVar(&o.certManager, "cert-manager", false, "let cert-manager issue and renew the issuer")
	fs.StringVar(&o.anchorCert, "anchor-cert", "", "PEM trust anchor(s): the bundle")
	fs.StringVar(&o.anchorKey, "anchor-key", "", "the anchor's private key (--cert-manager only)")
	fs.StringVar(&o.issuerCert, "issuer-cert", "", "PEM issuer certificate (then its chain)")
	fs.StringVar(&o.issuerKey, "issuer-key", "", "the issuer's private key")
	fs.Var(cli.Duration{D: &o.anchorTTL}, "anchor-ttl", "lifetime of a generated anchor (default 3650d)")
	fs.Var(cli.Duration{D: &o.issuerTTL}, "issuer-ttl", "lifetime of a generated issuer without cert-manager (default 90d)")
	fs.StringVar(&o.writeAnchorKey, "write-anchor-key", "", "save a generated anchor's key to this file (mode 0600), to issue the next issuer from it")
	fs.BoolVar(&o.webhook, "webhook", true, "also install meshid-webhook (sidecar injection, AuthorizationPolicy validation), the AuthorizationPolicy CRD, and have meshid-ca serve policies")
	fs.StringVar(&o.webhookImage, "webhook-image", "ghcr.io/meshid/meshid-webhook:latest", "meshid-webhook container image")
	fs.StringVar(&o.proxyImage, "proxy-image", "ghcr.io/meshid/meshid-proxy:latest", "meshid-proxy image the webhook injects")
	fs.BoolVar(&o.prometheusOperator, "prometheus-operator", false, "render the alerts as a PrometheusRule (needs the Prometheus Operator's CRDs)")
	fs.BoolVar(&o.apply, "apply", false, "apply with server-side apply instead of printing")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --apply (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVarP(&o.output, "output", "o", "yaml", "output format when printing: yaml or json")
	return cmd
}

func runInstall(ctx context.Context, o *installOptions, out io.Writer) error {
	mo := manifest.Options{
		Namespace: o.namespace, Image: o.image, Replicas: o.replicas,
		TrustDomain: o.trustDomain, Audience: o.audience, LeafTTL: o.leafTTL,
		PrometheusOperator: o.prometheusOperator,
	}
	if o.webhook {
		mo.Webhook = &manifest.Webhook{Image: o.webhookImage, ProxyImage: o.proxyImage}
	}
	if err := installMaterial(o, &mo); err != nil {
		return err
	}
	objs, err := manifest.Render(mo)
	if err != nil {
		return err
	}
	us, err := manifest.Unstructured(objs)
	if err != nil {
		return err
	}
	if o.apply {
		return applyAll(ctx, o, us, out)
	}
	if o.output == "json" {
		return writeJSON(out, map[string]any{"apiVersion": "v1", "kind": "List", "items": us})
	}
	y, err := manifest.YAML(us)
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}

// installMaterial loads or generates the trust material and refuses any
// that does not hang together.
func installMaterial(o *installOptions, mo *manifest.Options) error {
	now := o.now()
	var anchor *issuer.KeyPair
	switch {
	case o.issuerCert != "":
		anchorPEM, err := os.ReadFile(o.anchorCert)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		anchors, err := checkedBundle(anchorPEM, now)
		if err != nil {
			return fmt.Errorf("install: --anchor-cert %s: %w", o.anchorCert, err)
		}
		certPEM, err := os.ReadFile(o.issuerCert)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		keyPEM, err := os.ReadFile(o.issuerKey)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		iss, err := issuer.Parse(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("install: --issuer-cert/--issuer-key: %w", err)
		}
		if err := iss.Verify(anchors, now); err != nil {
			return fmt.Errorf("install: the issuer cannot be used with these anchors: %w", err)
		}
		mo.BundlePEM, mo.IssuerCertPEM, mo.IssuerKeyPEM = anchors.PEM(), certPEM, keyPEM
		return nil
	case o.anchorCert != "": // cert-manager with the operator's anchor
		certPEM, err := os.ReadFile(o.anchorCert)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		keyPEM, err := os.ReadFile(o.anchorKey)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if anchor, err = issuer.Parse(certPEM, keyPEM); err != nil {
			return fmt.Errorf("install: --anchor-cert/--anchor-key: %w", err)
		}
		if _, err := checkedBundle(bundle.Encode(anchor.Certificates()[:1]), now); err != nil {
			return fmt.Errorf("install: --anchor-cert %s: %w", o.anchorCert, err)
		}
	default:
		ttl := o.anchorTTL
		if ttl == 0 {
			ttl = 3650 * 24 * time.Hour
		}
		var err error
		if anchor, err = issuer.NewAnchor(issuer.CAParams{CommonName: "meshid trust anchor", NotBefore: now.Add(-time.Hour), TTL: ttl}); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		o.generated = true
		fmt.Fprintf(o.stderr, "meshid install: GENERATED A NEW TRUST ANCHOR %q, valid until %s\n", anchor.Cert.Subject.CommonName, anchor.Cert.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(o.stderr, "meshid install: anchor SHA-256 fingerprint %s\n", anchor.Fingerprint())
		if o.writeAnchorKey != "" {
			key, err := anchor.KeyPEM()
			if err != nil {
				return err
			}
			if err := writeFile(o.writeAnchorKey, key, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(o.stderr, "meshid install: the anchor's private key is in %s (mode 0600): keep it offline\n", o.writeAnchorKey)
		} else if !o.certManager {
			fmt.Fprintln(o.stderr, "meshid install: the anchor's private key is discarded (--write-anchor-key keeps it); a new issuer will need a new anchor, via meshid rotate-anchor")
		}
	}
	mo.BundlePEM = bundle.Encode(anchor.Certificates()[:1])
	if o.certManager {
		key, err := anchor.KeyPEM()
		if err != nil {
			return err
		}
		mo.CertManager = &manifest.CertManager{AnchorCertPEM: mo.BundlePEM, AnchorKeyPEM: key}
		return nil
	}
	ttl := o.issuerTTL
	if ttl == 0 {
		ttl = 90 * 24 * time.Hour
	}
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "meshid issuer", NotBefore: now.Add(-time.Hour), TTL: ttl, MaxPathLenZero: true})
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	mo.IssuerCertPEM = iss.CertPEM()
	if mo.IssuerKeyPEM, err = iss.KeyPEM(); err != nil {
		return err
	}
	return nil
}

// checkedBundle parses anchors and refuses expired or not yet valid ones.
func checkedBundle(data []byte, now time.Time) (*bundle.Bundle, error) {
	b, err := bundle.Parse(data)
	if err != nil {
		return nil, err
	}
	for _, a := range b.Anchors() {
		if now.After(a.NotAfter) || now.Before(a.NotBefore) {
			return nil, fmt.Errorf("anchor %s is not valid now (%s to %s)", a.Subject, a.NotBefore.UTC().Format(time.RFC3339), a.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return b, nil
}

// applyAll server-side applies every object, in order.
func applyAll(ctx context.Context, o *installOptions, objs []*unstructured.Unstructured, out io.Writer) error {
	cfg, err := kube.RESTConfig(o.kubeconfig, "meshid-install")
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	if o.generated {
		// A second install with a generated anchor would replace the
		// anchor every workload trusts, at once: an outage.
		cm, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(o.namespace).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
		if err == nil && cm != nil {
			return fmt.Errorf("install: meshid is already installed in namespace %s (ConfigMap %s exists); a generated anchor would replace the one every workload trusts. Pass the existing material (--anchor-cert ...), or change anchors with meshid rotate-anchor", o.namespace, manifest.BundleConfigMap)
		}
	}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("install: the cluster does not serve %s (%s): install its CRDs first (cert-manager, or the Prometheus Operator for --prometheus-operator)", gvk.Kind, gvk.GroupVersion())
			}
			return fmt.Errorf("install: %s: %w", gvk.Kind, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		data, err := u.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "meshid", Force: ptr.To(true)}); err != nil {
			return fmt.Errorf("install: apply %s %s: %w", gvk.Kind, u.GetName(), err)
		}
		fmt.Fprintf(out, "%s/%s applied\n", strings.ToLower(gvk.Kind), u.GetName())
	}
	return nil
}
