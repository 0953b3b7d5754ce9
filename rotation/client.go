package rotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
)

// Issued is a certificate the CA issued, with its private key and the time
// the CA asked the holder to renew it.
type Issued struct {
	SVID       *x509svid.SVID
	RenewAfter time.Time
	// ServerTime is the CA's clock when it signed; zero if it did not say.
	ServerTime time.Time
}

// Certificate returns the SVID for crypto/tls.
func (i *Issued) Certificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: i.SVID.PrivateKey, Leaf: i.SVID.Certificates[0]}
	for _, x := range i.SVID.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// Certify asks the CA for a certificate for the identity token proves. It
// generates a fresh ECDSA P-256 key, which never leaves the process, and
// checks that what comes back is an X.509-SVID for that key; a renew_after
// before now or after the leaf's end is replaced by one of its own.
func Certify(ctx context.Context, c identityv1.IdentityClient, token string, now time.Time) (*Issued, error) {
	return issue(now, func(csr []byte) (*identityv1.CertifyResponse, error) {
		resp, err := c.Certify(ctx, &identityv1.CertifyRequest{Csr: csr, Token: token})
		if err != nil {
			return nil, fmt.Errorf("rotation: certify: %w", err)
		}
		return resp, nil
	})
}

// JoinExternal is Certify for the ExternalWorkload ns/name, with its
// one-time join token.
func JoinExternal(ctx context.Context, c identityv1.IdentityClient, ns, name, token string, now time.Time) (*Issued, error) {
	return issue(now, func(csr []byte) (*identityv1.CertifyResponse, error) {
		resp, err := c.JoinExternal(ctx, &identityv1.JoinExternalRequest{Namespace: ns, Name: name, Token: token, Csr: csr})
		if err != nil {
			return nil, fmt.Errorf("rotation: join as ExternalWorkload %s/%s: %w", ns, name, err)
		}
		return resp, nil
	})
}

// RenewExternal is Certify for the ExternalWorkload name, over a
// connection c that presents its current certificate (DialCA with
// WithClientCertificate).
func RenewExternal(ctx context.Context, c identityv1.IdentityClient, name string, now time.Time) (*Issued, error) {
	return issue(now, func(csr []byte) (*identityv1.CertifyResponse, error) {
		resp, err := c.RenewExternal(ctx, &identityv1.RenewExternalRequest{Name: name, Csr: csr})
		if err != nil {
			return nil, fmt.Errorf("rotation: renew as ExternalWorkload %s: %w", name, err)
		}
		return resp, nil
	})
}

// issue makes a fresh key and its CSR, has call ask for the certificate,
// and checks the answer.
func issue(now time.Time, call func(csr []byte) (*identityv1.CertifyResponse, error)) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("rotation: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("rotation: create CSR: %w", err)
	}
	resp, err := call(csr)
	if err != nil {
		return nil, err
	}
	der := append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...)
	var raw []byte
	for _, d := range der {
		raw = append(raw, d...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	svid, err := x509svid.ParseRaw(raw, keyDER)
	if err != nil {
		return nil, fmt.Errorf("rotation: the CA's answer is not an X.509-SVID for our key: %w", err)
	}
	if resp.GetSpiffeId() != svid.ID.String() {
		return nil, fmt.Errorf("rotation: the CA said %q but the certificate names %s", resp.GetSpiffeId(), svid.ID)
	}
	// A missing or nonsensical renew_after must not cause a renewal loop.
	notAfter := svid.Certificates[0].NotAfter
	renew := resp.GetRenewAfter().AsTime()
	if resp.GetRenewAfter() == nil || renew.Before(now) || renew.After(notAfter) {
		renew = issuer.RenewAt(now, notAfter, mrand.Float64())
	}
	out := &Issued{SVID: svid, RenewAfter: renew}
	if resp.GetServerTime() != nil {
		out.ServerTime = resp.GetServerTime().AsTime()
	}
	return out, nil
}

// DialOption changes how DialCA connects.
type DialOption func(*tls.Config)

// WithClientCertificate presents cert to the CA (mTLS), as ReportStatus
// requires.
func WithClientCertificate(cert *tls.Certificate) DialOption {
	return func(c *tls.Config) {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
}

// DialCA opens a gRPC connection to the CA at target (host:port, or a
// comma-separated list of replicas, used round-robin) over TLS 1.3, verifying
// at every handshake that the CA presents an X.509-SVID for caID that chains
// to the bundle anchors returns then, so a rotated bundle is used on the
// next reconnect.
func DialCA(target string, anchors x509bundle.Source, caID spiffeid.ID, opts ...DialOption) (*grpc.ClientConn, error) {
	if anchors == nil {
		return nil, errors.New("rotation: DialCA needs a trust bundle")
	}
	authorize := func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		if got != caID {
			return fmt.Errorf("rotation: the CA at %s presented %s, but %s was expected", target, got, caID)
		}
		return nil
	}
	cfg := tlsconfig.TLSClientConfig(anchors, authorize)
	cfg.MinVersion = tls.VersionTLS13
	for _, o := range opts {
		o(cfg)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if addrs := strings.Split(target, ","); len(addrs) > 1 {
		// Several replicas: spread calls over them, and go on with the others
		// when one dies.
		r := manual.NewBuilderWithScheme("meshid")
		var state resolver.State
		for _, a := range addrs {
			state.Addresses = append(state.Addresses, resolver.Address{Addr: strings.TrimSpace(a)})
		}
		r.InitialState(state)
		target = r.Scheme() + ":///ca"
		dial = append(dial, grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("rotation: dial CA %s: %w", target, err)
	}
	return conn, nil
}
