package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/webhooks/admission"
	"github.com/meshid/meshid/webhooks/distribute"
	"github.com/meshid/meshid/webhooks/inject"
)

type options struct {
	kubeconfig, namespace, listen string
	dnsNames, ips                 []string
	caSecret                      string
	mutatingWebhooks              []string
	validatingWebhooks            []string
	certTTL                       time.Duration
	certDir                       string
	inject                        inject.Config
	log                           cli.LogOptions
}

func newRootCommand() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "meshid-webhook",
		Short: "Admission webhook: inject meshid-proxy into pods",
		Long: strings.TrimSpace(`
meshid-webhook serves the sidecar injector (POST /inject): a pod created in a
namespace labelled meshid.dev/inject=enabled, or annotated
meshid.dev/inject: enabled, gets the meshid-proxy container, a projected
service-account token for the CA's audience and the trust bundle. Injection is
idempotent; meshid.dev/inject: disabled opts out; hostNetwork pods are skipped.
A failure never blocks a pod: it is admitted without the sidecar, with a
warning.

Its serving certificate is issued by a webhook CA kept in --ca-secret (made on
first start, shared by every replica), re-minted after two thirds of
--cert-ttl, and the caBundle of every --mutating-webhook is kept equal to that
CA.

` + cli.ExitCodes),
		Args: cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			for _, ip := range o.ips {
				if net.ParseIP(ip) == nil {
					return cli.Usagef("--ip %q is not an IP address", ip)
				}
			}
			if o.inject.Image == "" {
				return cli.Usagef("--proxy-image is required")
			}
			if e := o.inject.TokenExpirationSeconds; e < minTokenExpiration || e > maxTokenExpiration {
				return cli.Usagef("--token-expiration %d: Kubernetes takes a projected token's lifetime from %d to %d seconds, e.g. --token-expiration 3600", e, minTokenExpiration, maxTokenExpiration)
			}
			if _, err := spiffeid.TrustDomainFromString(o.inject.TrustDomain); err != nil {
				return cli.Usagef("--trust-domain: %v", err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := o.log.Logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			klog.SetSlogLogger(log)
			cli.LogStart(log, "meshid-webhook")
			client, err := kube.KubeClient(o.kubeconfig, "meshid-webhook")
			if err != nil {
				return err
			}
			names := o.dnsNames
			if len(names) == 0 && len(o.ips) == 0 {
				names = []string{"meshid-webhook." + o.namespace + ".svc", "meshid-webhook." + o.namespace, "meshid-webhook"}
			}
			var ips []net.IP
			for _, ip := range o.ips {
				ips = append(ips, net.ParseIP(ip))
			}
			cert, err := admission.NewCert(admission.CertConfig{
				Client: client, Namespace: o.namespace, CASecret: o.caSecret, DNSNames: names, IPs: ips,
				TTL: o.certTTL, Dir: o.certDir, MutatingWebhooks: o.mutatingWebhooks, ValidatingWebhooks: o.validatingWebhooks, Log: log,
			})
			if err != nil {
				return err
			}
			if err := cert.Init(cmd.Context()); err != nil {
				return err
			}
			dyn, err := kube.DynamicClient(o.kubeconfig, "meshid-webhook")
			if err != nil {
				return err
			}
			td, err := spiffeid.TrustDomainFromString(o.inject.TrustDomain)
			if err != nil {
				return cli.Usagef("--trust-domain: %v", err)
			}
			dist, err := distribute.New(distribute.Config{Client: client, Namespace: o.namespace, Name: o.inject.BundleConfigMap,
				NamespaceLabel: inject.NamespaceLabel + "=enabled", Log: log})
			if err != nil {
				return err
			}
			srv, err := admission.New(admission.Config{Client: client, Dynamic: dyn, TrustDomain: td, Inject: o.inject, Listen: o.listen, Cert: cert, Log: log, Ensure: dist.Ensure})
			if err != nil {
				return err
			}
			g, ctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return dist.Run(ctx) })
			g.Go(func() error { return cert.Run(ctx) })
			g.Go(func() error { return srv.Run(ctx) })
			if err := g.Wait(); err != nil {
				return fmt.Errorf("meshid-webhook: %w", err)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config, then the pod's in-cluster configuration)")
	fs.StringVarP(&o.namespace, "namespace", "n", "meshid", "namespace of the webhook and its CA Secret")
	fs.StringVar(&o.listen, "listen", ":9443", "HTTPS address")
	fs.StringSliceVar(&o.dnsNames, "dns-name", nil, "DNS names of the serving certificate (default meshid-webhook.NAMESPACE.svc and shorter)")
	fs.StringSliceVar(&o.ips, "ip", nil, "IP addresses of the serving certificate")
	fs.StringVar(&o.caSecret, "ca-secret", "meshid-webhook-ca", "Secret holding the webhook CA")
	fs.StringSliceVar(&o.mutatingWebhooks, "mutating-webhook", []string{"meshid-injector"}, "MutatingWebhookConfigurations whose caBundle to keep in sync")
	fs.StringSliceVar(&o.validatingWebhooks, "validating-webhook", []string{"meshid-policy-validation"}, "ValidatingWebhookConfigurations whose caBundle to keep in sync")
	fs.DurationVar(&o.certTTL, "cert-ttl", 7*24*time.Hour, "lifetime of the serving certificate")
	fs.StringVar(&o.certDir, "cert-dir", "", "serve the certificate in this folder (tls.crt, tls.key, ca.crt: a cert-manager Secret) instead of issuing one; it is re-read every minute")
	fs.StringVar(&o.inject.Image, "proxy-image", "ghcr.io/meshid/meshid-proxy:latest", "meshid-proxy image to inject")
	fs.StringVar(&o.inject.CA, "ca-address", "meshid-ca.meshid.svc:8443", "meshid-ca address the injected proxy uses")
	fs.StringVar(&o.inject.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain")
	fs.Var((*modeFlag)(&o.inject.DefaultMode), "default-mode", "policy mode of injected pods' inbound ports that no AuthorizationPolicy names: deny, all-authenticated, cluster-authenticated or all-unauthenticated (default all-unauthenticated: meshed callers get mTLS, unmeshed ones still get through); a namespace label or pod annotation meshid.dev/default-mode overrides it")
	fs.StringVar(&o.inject.Audience, "audience", identity.DefaultAudience, "audience of the injected token")
	fs.StringVar(&o.inject.BundleConfigMap, "trust-bundle", "meshid-trust-bundle", "trust-bundle ConfigMap in --namespace; a copy is kept in every namespace labelled meshid.dev/inject=enabled and every namespace a pod is injected into, for the pods to mount")
	fs.Int64Var(&o.inject.TokenExpirationSeconds, "token-expiration", 3600, "lifetime of the injected token, seconds (600 to 4294967295, as Kubernetes takes it)")
	o.log.AddFlags(fs)
	cli.Setup(cmd)
	return cmd
}

// The projected service-account token's lifetime Kubernetes accepts
// (ServiceAccountTokenProjection.ExpirationSeconds), checked before the
// webhook writes anything to the cluster.
const (
	minTokenExpiration = 600
	maxTokenExpiration = 1<<32 - 1
)

// modeFlag is a policy mode, checked when it is set.
type modeFlag policy.Mode

func (m *modeFlag) String() string { return string(*m) }
func (m *modeFlag) Type() string   { return "mode" }
func (m *modeFlag) Set(v string) error {
	if err := policy.Mode(v).Validate(); err != nil {
		return err
	}
	*m = modeFlag(v)
	return nil
}
