package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

// The names a measured meshid-ca runs with.
const (
	Audience        = identity.DefaultAudience
	TrustDomain     = identity.DefaultTrustDomain
	CANamespace     = "meshid"
	IssuerSecret    = "meshid-issuer"
	BundleConfigMap = "meshid-trust-bundle"
)

// PKI is the trust material of a run, stored for meshid-ca as its issuer
// Secret and bundle ConfigMap in CANamespace.
type PKI struct {
	Anchor, Issuer *issuer.KeyPair
	Bundle         *bundle.Bundle
}

// NewPKI makes an anchor and an issuer under it, and stores them in a new
// CANamespace.
func NewPKI(ctx context.Context, client kubernetes.Interface) (*PKI, error) {
	anchor, err := issuer.NewAnchor(issuer.CAParams{CommonName: "bench anchor", TTL: 48 * time.Hour})
	if err != nil {
		return nil, err
	}
	iss, err := anchor.NewIntermediate(issuer.CAParams{CommonName: "bench issuer", TTL: 24 * time.Hour, MaxPathLenZero: true})
	if err != nil {
		return nil, err
	}
	keyPEM, err := iss.KeyPEM()
	if err != nil {
		return nil, err
	}
	b, err := bundle.Parse(anchor.CertPEM())
	if err != nil {
		return nil, err
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: CANamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := client.CoreV1().Secrets(CANamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: IssuerSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": iss.CertPEM(), "tls.key": keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := client.CoreV1().ConfigMaps(CANamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap},
		Data:       map[string]string{bundle.Key: string(anchor.CertPEM())},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	return &PKI{Anchor: anchor, Issuer: iss, Bundle: b}, nil
}

// ServiceAccounts creates namespace ns and n service accounts in it,
// sa-0 to sa-(n-1).
func ServiceAccounts(ctx context.Context, client kubernetes.Interface, ns string, n int) error {
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	run := Batch(ctx, n, 16, func(ctx context.Context, i int) error {
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sa-%d", i)}}, metav1.CreateOptions{})
		return err
	})
	return run.FirstErr
}

// Tokens asks for a new token for Audience, valid an hour, of each of the
// n service accounts of ns.
func Tokens(ctx context.Context, client kubernetes.Interface, ns string, n int) ([]string, error) {
	toks := make([]string, n)
	run := Batch(ctx, n, 16, func(ctx context.Context, i int) error {
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, fmt.Sprintf("sa-%d", i), &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{Audience}, ExpirationSeconds: ptr.To[int64](3600)},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		toks[i] = tr.Status.Token
		return nil
	})
	return toks, run.FirstErr
}

// WorkloadID is the SPIFFE ID of service account sa-i of ns.
func WorkloadID(ns string, i int) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/sa-%d", TrustDomain, ns, i)
}

// CAID is the SPIFFE ID meshid-ca serves with.
func CAID() string { return fmt.Sprintf("spiffe://%s/ns/%s/sa/meshid-ca", TrustDomain, CANamespace) }

// CAConfig says how to start a meshid-ca under measurement.
type CAConfig struct {
	// Bin is the meshid-ca binary. Required.
	Bin string
	// Dir holds its log, Name.log. Required.
	Dir, Name string
	// Kubeconfig is the admin kubeconfig of the control plane. Required.
	Kubeconfig string
	// Addr and Admin are the gRPC and admin addresses; empty picks a free
	// loopback port.
	Addr, Admin string
	// Pin is where it runs; zero: anywhere.
	Pin Pinned
	// Args are further flags.
	Args []string
}

// CA is a running meshid-ca.
type CA struct {
	*Proc
	Addr, Admin string
}

// StartCA runs meshid-ca with the issuer Secret and bundle ConfigMap of
// NewPKI and waits until it is ready.
func StartCA(cfg CAConfig) (*CA, error) {
	if cfg.Addr == "" {
		cfg.Addr = FreeAddr()
	}
	if cfg.Admin == "" {
		cfg.Admin = FreeAddr()
	}
	p, err := cfg.Pin.Start(cfg.Dir, cfg.Name, cfg.Bin, append([]string{
		"--kubeconfig", cfg.Kubeconfig, "--namespace", CANamespace,
		"--issuer-secret", IssuerSecret, "--trust-bundle", BundleConfigMap,
		"--listen", cfg.Addr, "--admin-listen", cfg.Admin,
	}, cfg.Args...)...)
	if err != nil {
		return nil, err
	}
	if err := WaitReady(p, cfg.Admin); err != nil {
		return nil, err
	}
	return &CA{Proc: p, Addr: cfg.Addr, Admin: cfg.Admin}, nil
}

// WaitReady waits until the meshid process p answers /ready on admin, and
// stops it if it never does.
func WaitReady(p *Proc, admin string) error {
	err := p.WaitFor(30*time.Second, func() error {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		p.Stop()
	}
	return err
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
