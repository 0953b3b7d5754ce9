package admission

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/issuer"
)

// CertConfig configures the webhook's serving certificate.
type CertConfig struct {
	// Client stores the webhook CA and updates caBundles. Required.
	Client kubernetes.Interface
	// Namespace and CASecret hold the webhook CA shared by every replica.
	Namespace, CASecret string
	// DNSNames and IPs of the serving certificate (the Service's names).
	DNSNames []string
	IPs      []net.IP
	// TTL of a serving certificate; 0 means 7 days. It is re-minted after
	// two thirds of that.
	TTL time.Duration
	// MutatingWebhooks and ValidatingWebhooks name the configurations whose
	// caBundle is kept equal to the webhook CA.
	MutatingWebhooks, ValidatingWebhooks []string
	// Dir, when set, holds the serving certificate instead (tls.crt,
	// tls.key and ca.crt, as a cert-manager Secret mounted there): it is read
	// again every minute, and ca.crt becomes the caBundle. CASecret, names
	// and TTL are then unused.
	Dir string
	// Log receives a line per change; nil discards.
	Log *slog.Logger
	// Clock tells the time for minting and paces the renewals and re-syncs;
	// nil means the real clock.
	Clock clock.WithTicker
}

// Cert is the webhook's serving certificate: issued by a webhook CA kept
// in a Secret (created on first start), re-minted before it expires, with
// the caBundle of the webhook configurations kept in sync; or, with Dir,
// issued by cert-manager and read from files.
type Cert struct {
	cfg      CertConfig
	ca       *issuer.KeyPair
	caBundle atomic.Pointer[[]byte]
	cur      atomic.Pointer[tls.Certificate]
}

// NewCert returns a Cert; Run makes it usable.
func NewCert(cfg CertConfig) (*Cert, error) {
	if cfg.Client == nil || (cfg.Dir == "" && (cfg.Namespace == "" || cfg.CASecret == "" || len(cfg.DNSNames)+len(cfg.IPs) == 0)) {
		return nil, errors.New("admission: CertConfig needs Client, Namespace, CASecret and names")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 7 * 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Cert{cfg: cfg}, nil
}

// GetCertificate is a tls.Config callback.
func (c *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.cur.Load(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("admission: no serving certificate yet")
}

// NotAfter is when the serving certificate in use expires.
func (c *Cert) NotAfter() time.Time {
	if cert := c.cur.Load(); cert != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}

// Init loads or creates the webhook CA, mints the first serving
// certificate and syncs the caBundles.
func (c *Cert) Init(ctx context.Context) error {
	if c.cfg.Dir != "" {
		if err := c.load(); err != nil {
			return err
		}
		if err := c.syncCABundles(ctx); err != nil {
			c.cfg.Log.Warn("cannot sync the webhook caBundle yet", "error", err)
		}
		return nil
	}
	ca, err := c.loadCA(ctx)
	if err != nil {
		return err
	}
	c.ca = ca
	bundle := ca.CertPEM()
	c.caBundle.Store(&bundle)
	if err := c.mint(); err != nil {
		return err
	}
	if err := c.syncCABundles(ctx); err != nil {
		// Not fatal: Run tries again every minute.
		c.cfg.Log.Warn("cannot sync the webhook caBundle yet", "error", err)
	}
	return nil
}

// Run re-mints the certificate at two thirds of its life and re-syncs the
// caBundles every minute (someone may have edited them), until ctx ends.
func (c *Cert) Run(ctx context.Context) error {
	tick := c.cfg.Clock.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		cur := c.cur.Load()
		renew := cur.Leaf.NotBefore.Add(cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore) * 2 / 3).Sub(c.cfg.Clock.Now())
		if c.cfg.Dir != "" {
			renew = time.Hour // cert-manager renews; the files are re-read every tick
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.Clock.After(max(renew, time.Second)):
			if err := c.mint(); err != nil {
				c.cfg.Log.Error("cannot renew the webhook serving certificate; the current one stays in use", "error", err, "not_after", cur.Leaf.NotAfter)
			}
		case <-tick.C():
			if c.cfg.Dir != "" {
				if err := c.load(); err != nil {
					c.cfg.Log.Error("cannot read the webhook serving certificate; the current one stays in use", "dir", c.cfg.Dir, "error", err)
				}
			}
		}
		if err := c.syncCABundles(ctx); err != nil {
			c.cfg.Log.Warn("cannot sync the webhook caBundle", "error", err)
		}
	}
}

func (c *Cert) loadCA(ctx context.Context) (*issuer.KeyPair, error) {
	secrets := c.cfg.Client.CoreV1().Secrets(c.cfg.Namespace)
	s, err := secrets.Get(ctx, c.cfg.CASecret, metav1.GetOptions{})
	if err == nil {
		kp, err := issuer.Parse(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			return nil, fmt.Errorf("admission: webhook CA Secret %s: %w", c.cfg.CASecret, err)
		}
		return kp, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("admission: read webhook CA Secret: %w", err)
	}
	kp, err := issuer.NewAnchor(issuer.CAParams{CommonName: "meshid webhook CA", NotBefore: c.cfg.Clock.Now().Add(-time.Hour), TTL: 5 * 365 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	key, err := kp.KeyPEM()
	if err != nil {
		return nil, err
	}
	_, err = secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: c.cfg.CASecret, Namespace: c.cfg.Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: kp.CertPEM(), corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // another replica was first
		return c.loadCA(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("admission: create webhook CA Secret: %w", err)
	}
	c.cfg.Log.Info("created the webhook CA", "secret", c.cfg.CASecret, "sha256", kp.Fingerprint())
	return kp, nil
}

// load reads tls.crt, tls.key and ca.crt from Dir.
func (c *Cert) load() error {
	pair, err := tls.LoadX509KeyPair(filepath.Join(c.cfg.Dir, "tls.crt"), filepath.Join(c.cfg.Dir, "tls.key"))
	if err != nil {
		return fmt.Errorf("admission: serving certificate in %s: %w", c.cfg.Dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(c.cfg.Dir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	if cur := c.cur.Load(); cur == nil || !pair.Leaf.Equal(cur.Leaf) {
		c.cur.Store(&pair)
		c.cfg.Log.Info("webhook serving certificate loaded", "dir", c.cfg.Dir, "not_after", pair.Leaf.NotAfter)
	}
	c.caBundle.Store(&caPEM)
	return nil
}

func (c *Cert) mint() error {
	if c.cfg.Dir != "" {
		return c.load()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := issuer.NewSerial()
	if err != nil {
		return err
	}
	now := c.cfg.Clock.Now()
	out, err := c.ca.SignTemplate(&x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: c.name()},
		DNSNames: c.cfg.DNSNames, IPAddresses: c.cfg.IPs,
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(c.cfg.TTL),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}, key.Public())
	if err != nil {
		return err
	}
	leaf, err := out.Certificate()
	if err != nil {
		return err
	}
	c.cur.Store(&tls.Certificate{Certificate: [][]byte{out.DER}, PrivateKey: key, Leaf: leaf})
	c.cfg.Log.Info("webhook serving certificate minted", "not_after", out.NotAfter)
	return nil
}

func (c *Cert) name() string {
	if len(c.cfg.DNSNames) > 0 {
		return c.cfg.DNSNames[0]
	}
	return c.cfg.IPs[0].String()
}

// syncCABundles sets every webhook's caBundle to the webhook CA.
func (c *Cert) syncCABundles(ctx context.Context) error {
	want := *c.caBundle.Load()
	api := c.cfg.Client.AdmissionregistrationV1()
	var errs []error
	for _, name := range c.cfg.MutatingWebhooks {
		errs = append(errs, syncCABundle(ctx, c.cfg.Log, "MutatingWebhookConfiguration", name, want, api.MutatingWebhookConfigurations(),
			func(w *admissionregistrationv1.MutatingWebhookConfiguration) []*[]byte {
				return bundlesOf(w.Webhooks, func(h *admissionregistrationv1.MutatingWebhook) *[]byte { return &h.ClientConfig.CABundle })
			}))
	}
	for _, name := range c.cfg.ValidatingWebhooks {
		errs = append(errs, syncCABundle(ctx, c.cfg.Log, "ValidatingWebhookConfiguration", name, want, api.ValidatingWebhookConfigurations(),
			func(w *admissionregistrationv1.ValidatingWebhookConfiguration) []*[]byte {
				return bundlesOf(w.Webhooks, func(h *admissionregistrationv1.ValidatingWebhook) *[]byte { return &h.ClientConfig.CABundle })
			}))
	}
	return errors.Join(errs...)
}

// webhookConfigs is the client of one kind of webhook configuration.
type webhookConfigs[T any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// syncCABundle sets every caBundle of the named configuration to want.
func syncCABundle[T any](ctx context.Context, log *slog.Logger, kind, name string, want []byte, api webhookConfigs[T], bundles func(T) []*[]byte) error {
	obj, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	changed := false
	for _, b := range bundles(obj) {
		if string(*b) != string(want) {
			*b = want
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := api.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	log.Info("caBundle synced", "webhook", name)
	return nil
}

func bundlesOf[H any](hooks []H, bundle func(*H) *[]byte) []*[]byte {
	out := make([]*[]byte, len(hooks))
	for i := range hooks {
		out[i] = bundle(&hooks[i])
	}
	return out
}
