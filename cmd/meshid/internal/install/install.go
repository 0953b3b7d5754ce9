package install

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/ca/oidc"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/issuer"
)

// Options are install's flags, and what tests replace.
type Options struct {
	// Namespace, Image, Replicas, TrustDomain, Audience, LeafTTL,
	// PrometheusOperator, Federation: see manifest.Options.
	Namespace, Image      string
	Replicas              int32
	TrustDomain, Audience string
	LeafTTL               time.Duration
	PrometheusOperator    bool
	Federation            bool
	// CertManager lets cert-manager issue and renew the issuer, over
	// AnchorCert and AnchorKey, or over a generated anchor when both are
	// empty.
	CertManager bool
	// AnchorCert, IssuerCert and IssuerKey are files of the operator's own
	// material; AnchorKey is the anchor's key file, for CertManager.
	AnchorCert, AnchorKey string
	IssuerCert, IssuerKey string
	// AnchorTTL and IssuerTTL are the lifetimes of a generated anchor and
	// issuer; 0 means 3650 days and 90 days. With StepCAURL, IssuerTTL is
	// the lifetime each replica asks step-ca for (0: meshid-ca's 48 h).
	AnchorTTL, IssuerTTL time.Duration
	// StepCAURL, when set, makes step-ca the issuer source
	// (manifest.StepCA): each replica gets its own intermediate. StepCARoot
	// is the file of step-ca's root (it becomes the trust bundle too),
	// StepCAProvisioner the JWK provisioner's name, StepCAKeySecret the
	// Secret the operator created with the provisioner's private JWK
	// under key.json.
	StepCAURL, StepCARoot, StepCAProvisioner, StepCAKeySecret string
	// WriteAnchorKey saves a generated anchor's key there (mode 0600);
	// empty discards it (unless CertManager needs it in the cluster).
	WriteAnchorKey string
	// Webhook also renders meshid-webhook, with WebhookImage, injecting
	// ProxyImage.
	Webhook                  bool
	WebhookImage, ProxyImage string
	// External renders the ExternalWorkload CRD and has meshid-ca serve
	// external workloads, their certificates living ExternalLeafTTL (0:
	// meshid-ca's default).
	External        bool
	ExternalLeafTTL time.Duration
	// JWTSVIDs turns on JWT-SVIDs (manifest.JWT), capped at JWTMaxTTL (0:
	// meshid-ca's default).
	JWTSVIDs  bool
	JWTMaxTTL time.Duration
	// OIDCIssuer, with JWTSVIDs, serves OIDC discovery for that issuer URL.
	OIDCIssuer string
	// Apply applies with server-side apply instead of printing, with the
	// clients for Cluster.
	Apply   bool
	Cluster kube.Target
	// Output is "yaml" or "json" when printing; with Apply, "json" prints
	// a JSON object per applied object, else a line of text.
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
	step := o.StepCAURL != "" || o.StepCARoot != "" || o.StepCAProvisioner != "" || o.StepCAKeySecret != ""
	switch {
	case o.Output != "yaml" && o.Output != "json":
		return cli.Usagef("-o %q: use yaml or json", o.Output)
	case step && (o.CertManager || own || o.AnchorCert != "" || o.AnchorKey != "" || o.WriteAnchorKey != ""):
		return cli.Usagef("--step-ca-url gives each meshid-ca replica its issuer from step-ca, and step-ca's root is the bundle: drop --cert-manager, --anchor-*, --issuer-cert/--issuer-key and --write-anchor-key")
	case step && (o.StepCAURL == "" || o.StepCARoot == "" || o.StepCAProvisioner == "" || o.StepCAKeySecret == ""):
		return cli.Usagef("step-ca takes --step-ca-url, --step-ca-root, --step-ca-provisioner and --step-ca-provisioner-key-secret together")
	case o.CertManager && own:
		return cli.Usagef("--cert-manager manages the issuer itself: drop --issuer-cert/--issuer-key (give it --anchor-cert and --anchor-key, or neither to generate an anchor)")
	case own && (o.IssuerCert == "" || o.IssuerKey == "" || o.AnchorCert == ""):
		return cli.Usagef("your own material takes --anchor-cert, --issuer-cert and --issuer-key together")
	case o.CertManager && (o.AnchorCert == "") != (o.AnchorKey == ""):
		return cli.Usagef("--cert-manager with your own anchor takes --anchor-cert and --anchor-key together")
	case !o.CertManager && !own && (o.AnchorCert != "" || o.AnchorKey != ""):
		return cli.Usagef("--anchor-cert alone is not enough: add --issuer-cert and --issuer-key, or --cert-manager with --anchor-key")
	case !o.CertManager && own && o.AnchorKey != "":
		return cli.Usagef("--anchor-key only applies with --cert-manager: with your own --issuer-cert and --issuer-key, install does not use the anchor's key; drop --anchor-key")
	case o.WriteAnchorKey != "" && (own || o.AnchorCert != ""):
		return cli.Usagef("--write-anchor-key only applies when install generates the anchor")
	case o.Replicas < 1:
		return cli.Usagef("--replicas must be at least 1")
	case (o.JWTMaxTTL != 0 || o.OIDCIssuer != "") && !o.JWTSVIDs:
		return cli.Usagef("--jwt-ttl-max and --oidc-issuer need --jwt-svids")
	case o.JWTMaxTTL < 0:
		return cli.Usagef("--jwt-ttl-max must not be negative")
	}
	if o.OIDCIssuer != "" {
		if err := oidc.CheckIssuer(o.OIDCIssuer); err != nil {
			return cli.Usagef("--oidc-issuer: %v", err)
		}
	}
	if _, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	return nil
}

// Run renders the control plane and prints it to out, or applies it (and
// prints a line per object). Everything that can be checked is checked
// before a key is generated or a file written: the key file's path, the
// operator's material, and with Apply the cluster (meshid not installed
// yet when the anchor is generated, every kind served).
func Run(ctx context.Context, o *Options, out io.Writer) error {
	now := clock.RealClock{}.Now()
	if o.Clock != nil {
		now = o.Clock.Now()
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	if o.WriteAnchorKey != "" {
		if err := output.CheckNew("--write-anchor-key", o.WriteAnchorKey); err != nil {
			return fmt.Errorf("install: %w", err)
		}
	}
	mo := manifest.Options{
		Namespace: o.Namespace, Image: o.Image, Replicas: o.Replicas,
		TrustDomain: o.TrustDomain, Audience: o.Audience, LeafTTL: o.LeafTTL,
		PrometheusOperator: o.PrometheusOperator, Federation: o.Federation,
	}
	if o.Webhook {
		mo.Webhook = &manifest.Webhook{Image: o.WebhookImage, ProxyImage: o.ProxyImage}
	}
	if o.External {
		mo.External = &manifest.External{LeafTTL: o.ExternalLeafTTL}
	}
	if o.JWTSVIDs {
		mo.JWT = &manifest.JWT{MaxTTL: o.JWTMaxTTL, OIDCIssuer: o.OIDCIssuer}
	}
	generate, err := readMaterial(o, &mo, now)
	if err != nil {
		return err
	}
	var c *kube.Clients
	if o.Apply {
		connect := o.Connect
		if connect == nil {
			connect = kube.NewClients
		}
		if c, err = connect(o.Cluster, "meshid-install"); err != nil {
			return err
		}
		shape := mo
		if generate {
			shape = standIn(o, mo)
		}
		objs, err := render(shape)
		if err != nil {
			return err
		}
		if err := preflight(ctx, c, o, generate, mo.BundlePEM, objs); err != nil {
			return err
		}
	}
	var anchor *issuer.KeyPair
	if generate {
		if anchor, err = generateMaterial(o, &mo, now); err != nil {
			return err
		}
	}
	objs, err := render(mo)
	if err != nil {
		return err
	}
	if anchor != nil {
		if err := keepAnchor(o, anchor, stderr); err != nil {
			return err
		}
	}
	return emit(ctx, c, o, objs, out)
}

func render(mo manifest.Options) ([]*unstructured.Unstructured, error) {
	objs, err := manifest.Render(mo)
	if err != nil {
		return nil, err
	}
	return manifest.Unstructured(objs)
}

// emit applies objs with c (Apply), or prints them.
func emit(ctx context.Context, c *kube.Clients, o *Options, objs []*unstructured.Unstructured, out io.Writer) error {
	if o.Apply {
		return apply(ctx, c, o, objs, out)
	}
	if o.Output == "json" {
		return output.JSON(out, map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	}
	y, err := manifest.YAML(objs)
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}
