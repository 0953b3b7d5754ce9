package install

import (
	"context"
	"io"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
)

// Options are install's flags, and what tests replace.
type Options struct {
	// Namespace, Image, Replicas, TrustDomain, Audience, LeafTTL,
	// PrometheusOperator: see manifest.Options.
	Namespace, Image      string
	Replicas              int32
	TrustDomain, Audience string
	LeafTTL               time.Duration
	PrometheusOperator    bool
	// CertManager lets cert-manager issue and renew the issuer, over
	// AnchorCert and AnchorKey, or over a generated anchor when both are
	// empty.
	CertManager bool
	// AnchorCert, IssuerCert and IssuerKey are files of the operator's own
	// material; AnchorKey is the anchor's key file, for CertManager.
	AnchorCert, AnchorKey string
	IssuerCert, IssuerKey string
	// AnchorTTL and IssuerTTL are the lifetimes of a generated anchor and
	// issuer; 0 means 3650 days and 90 days.
	AnchorTTL, IssuerTTL time.Duration
	// WriteAnchorKey saves a generated anchor's key there (mode 0600);
	// empty discards it (unless CertManager needs it in the cluster).
	WriteAnchorKey string
	// Webhook also renders meshid-webhook, with WebhookImage, injecting
	// ProxyImage.
	Webhook                  bool
	WebhookImage, ProxyImage string
	// Apply applies with server-side apply instead of printing, with the
	// clients from Kubeconfig.
	Apply      bool
	Kubeconfig string
	// Output is "yaml" or "json", when printing.
	Output string

	// Stderr receives the notes about a generated anchor; nil discards.
	Stderr io.Writer
	// Connect builds the Kubernetes clients, for Apply; nil means
	// kube.NewClients.
	Connect kube.Connect
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Validate refuses flags that cannot work, as usage errors, before
// anything is read or generated.
func (o *Options) Validate() error {
	own := o.IssuerCert != "" || o.IssuerKey != ""
	switch {
	case o.Output != "yaml" && o.Output != "json":
		return cli.Usagef("-o %q: use yaml or json", o.Output)
	case o.CertManager && own:
		return cli.Usagef("--cert-manager manages the issuer itself: drop --issuer-cert/--issuer-key (give it --anchor-cert and --anchor-key, or neither to generate an anchor)")
	case own && (o.IssuerCert == "" || o.IssuerKey == "" || o.AnchorCert == ""):
		return cli.Usagef("your own material takes --anchor-cert, --issuer-cert and --issuer-key together")
	case o.CertManager && (o.AnchorCert == "") != (o.AnchorKey == ""):
		return cli.Usagef("--cert-manager with your own anchor takes --anchor-cert and --anchor-key together")
	case !o.CertManager && !own && (o.AnchorCert != "" || o.AnchorKey != ""):
		return cli.Usagef("--anchor-cert alone is not enough: add --issuer-cert and --issuer-key, or --cert-manager with --anchor-key")
	case o.WriteAnchorKey != "" && (own || o.AnchorCert != ""):
		return cli.Usagef("--write-anchor-key only applies when install generates the anchor")
	case o.Replicas < 1:
		return cli.Usagef("--replicas must be at least 1")
	}
	if _, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	return nil
}

// Run renders the control plane and prints it to out, or applies it (and
// prints a line per object).
func Run(ctx context.Context, o *Options, out io.Writer) error {
	mo := manifest.Options{
		Namespace: o.Namespace, Image: o.Image, Replicas: o.Replicas,
		TrustDomain: o.TrustDomain, Audience: o.Audience, LeafTTL: o.LeafTTL,
		PrometheusOperator: o.PrometheusOperator,
	}
	if o.Webhook {
		mo.Webhook = &manifest.Webhook{Image: o.WebhookImage, ProxyImage: o.ProxyImage}
	}
	generated, err := material(o, &mo)
	if err != nil {
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
	if o.Apply {
		return apply(ctx, o, generated, us, out)
	}
	if o.Output == "json" {
		return output.JSON(out, map[string]any{"apiVersion": "v1", "kind": "List", "items": us})
	}
	y, err := manifest.YAML(us)
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}
