package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/install"
	"github.com/meshid/meshid/identity"
)

func newInstallCommand(connect kube.Connect, run func(context.Context, *install.Options, io.Writer) error) *cobra.Command {
	o := &install.Options{Connect: connect}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Render (or apply) the meshid control plane",
		Long: strings.TrimSpace(`
install renders the whole meshid control plane as YAML for kubectl apply -f -
(or applies it itself with --apply, by server-side apply): the namespace, the
meshid-ca service account with least-privilege RBAC (create TokenReviews; list
and watch its one issuer Secret and one bundle ConfigMap; write its fleet
reports; Events) and an admission policy refusing its writes to any other
ConfigMap, the meshid-ca Deployment (2 replicas, probes, resource requests,
non-root, read-only root filesystem) and Service, the trust-bundle ConfigMap,
the alert rules (a Prometheus rule file in a ConfigMap, or a PrometheusRule
with --prometheus-operator) and a Grafana dashboard (ConfigMap
meshid-grafana-dashboard, which the Grafana sidecar loads). With --webhook (the
default): the AuthorizationPolicy CRD, meshid-webhook with its RBAC (by name where
Kubernetes allows it) and admission policy, and its webhook configurations.
With --jwt-svids: meshid-ca mints JWT-SVIDs, with get, create, patch and update
on its one key Secret meshid-jwt-keys. docs/cli.md lists every rule.

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
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Stderr = cmd.ErrOrStderr()
			return run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Namespace, "namespace", "n", "meshid", "namespace of the control plane")
	fs.StringVar(&o.Image, "image", image("meshid-ca"), "meshid-ca container image"+imageNote)
	fs.Int32Var(&o.Replicas, "replicas", 2, "meshid-ca replicas")
	fs.StringVar(&o.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&o.Audience, "audience", identity.DefaultAudience, "token audience meshid-ca requires")
	fs.DurationVar(&o.LeafTTL, "leaf-ttl", 24*time.Hour, "workload certificate lifetime")
	fs.BoolVar(&o.CertManager, "cert-manager", false, "let cert-manager issue and renew the issuer")
	fs.StringVar(&o.AnchorCert, "anchor-cert", "", "PEM trust anchor(s): the bundle")
	fs.StringVar(&o.AnchorKey, "anchor-key", "", "the anchor's private key (--cert-manager only)")
	fs.StringVar(&o.IssuerCert, "issuer-cert", "", "PEM issuer certificate (then its chain)")
	fs.StringVar(&o.IssuerKey, "issuer-key", "", "the issuer's private key")
	fs.Var(cli.Duration{D: &o.AnchorTTL}, "anchor-ttl", "lifetime of a generated anchor (default 3650d)")
	fs.Var(cli.Duration{D: &o.IssuerTTL}, "issuer-ttl", "lifetime of a generated issuer without cert-manager (default 90d)")
	fs.StringVar(&o.WriteAnchorKey, "write-anchor-key", "", "save a generated anchor's key to this new file (mode 0600; an existing file is never replaced), to issue the next issuer from it")
	fs.BoolVar(&o.Webhook, "webhook", true, "also install meshid-webhook (sidecar injection, AuthorizationPolicy validation), the AuthorizationPolicy CRD, and have meshid-ca serve policies")
	fs.StringVar(&o.WebhookImage, "webhook-image", image("meshid-webhook"), "meshid-webhook container image"+imageNote)
	fs.StringVar(&o.ProxyImage, "proxy-image", image("meshid-proxy"), "meshid-proxy image the webhook injects"+imageNote)
	fs.BoolVar(&o.External, "external-workloads", false, "also install the ExternalWorkload CRD and have meshid-ca serve workloads outside the cluster (meshid workload join); see docs/expansion.md")
	fs.DurationVar(&o.ExternalLeafTTL, "external-leaf-ttl", 0, "with --external-workloads: an external workload's certificate lifetime (default meshid-ca's, 1h)")
	fs.BoolVar(&o.JWTSVIDs, "jwt-svids", false, "have meshid-ca mint JWT-SVIDs (proxies serve them on the Workload API): it keeps its ES256 signing keys in Secret meshid-jwt-keys, which it creates, and may get, create, patch and update that one Secret")
	fs.StringVar(&o.OIDCIssuer, "oidc-issuer", "", "with --jwt-svids: the https issuer URL of the JWT-SVIDs, for cloud providers and Vault; meshid-ca serves its discovery documents on Service port oidc (8445, plain HTTP: expose it through an Ingress that terminates TLS for the issuer's host and forwards its path)")
	fs.DurationVar(&o.JWTMaxTTL, "jwt-ttl-max", 0, "with --jwt-svids: the longest JWT-SVID a workload may ask for (0: meshid-ca's default, 1h; the default lifetime is 5m)")
	fs.BoolVar(&o.Federation, "federation", false, "also install the FederatedTrustDomain CRD and have meshid-ca trust the foreign trust domains they name (list/watch on them, update on their status; docs/federation.md)")
	fs.BoolVar(&o.PrometheusOperator, "prometheus-operator", false, "render the alerts as a PrometheusRule (needs the Prometheus Operator's CRDs)")
	fs.BoolVar(&o.Apply, "apply", false, "apply with server-side apply instead of printing")
	o.Cluster.AddFlags(fs)
	fs.StringVarP(&o.Output, "output", "o", "yaml", "output format: yaml or json (with --apply: a line per object, or a JSON object per line)")
	return cmd
}

// image is the image of cmd at this CLI's version: an install runs the
// release it was rendered by. A development build (version "dev") has no
// released images, so it uses :latest.
func image(cmd string) string {
	tag := cli.BuildInfo().Version
	if tag == cli.DevVersion {
		tag = "latest"
	}
	return "ghcr.io/meshid/" + cmd + ":" + tag
}

// imageNote says where the default tag comes from.
var imageNote = func() string {
	if cli.BuildInfo().Version == cli.DevVersion {
		return " (this is a development build, version dev: the default is :latest)"
	}
	return " (default: the tag of this CLI's version)"
}()
