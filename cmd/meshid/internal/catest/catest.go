package catest

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/authn"
	"github.com/meshid/meshid/ca/trust"
	"github.com/meshid/meshid/cmd/meshid/internal/pkitest"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/issuer"
)

// CA is a running CA.
type CA struct {
	// Addr is its gRPC address on 127.0.0.1.
	Addr string
	// ID is the SPIFFE ID it presents: meshid-ca's default.
	ID spiffeid.ID
	// Anchor and Issuer are its trust material, valid for a day from an
	// hour ago.
	Anchor, Issuer *issuer.KeyPair
}

// Tokens maps a token to the service account it proves.
type Tokens map[string]identity.ServiceAccount

// Review implements ca.Authenticator.
func (tk Tokens) Review(_ context.Context, token string) (authn.Result, bool, error) {
	sa, ok := tk[token]
	if !ok {
		return authn.Result{}, false, &authn.Error{Reason: authn.Rejected, Detail: "unknown token"}
	}
	id, err := sa.ID(spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain))
	return authn.Result{ID: id, ServiceAccount: sa}, false, err
}

// Start runs a CA in the default trust domain until the test ends.
func Start(t testing.TB, tokens Tokens) *CA {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	now := time.Now()
	c := &CA{}
	c.Anchor = pkitest.CA(t, nil, "catest anchor", now.Add(-time.Hour), 25*time.Hour)
	c.Issuer = pkitest.CA(t, c.Anchor, "catest issuer", now.Add(-time.Hour), 25*time.Hour)
	id, err := identity.DefaultCA.ID(td)
	if err != nil {
		t.Fatal(err)
	}
	c.ID = id

	store := trust.NewStore(trust.Config{})
	if _, err := store.SetBundle(c.Anchor.CertPEM()); err != nil {
		t.Fatal(err)
	}
	key, err := c.Issuer.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetIssuer(c.Issuer.CertPEM(), key); err != nil {
		t.Fatal(err)
	}
	server, err := ca.NewServer(ca.ServerConfig{TrustDomain: td, Authenticator: tokens, Trust: store, Reserved: []spiffeid.ID{id}})
	if err != nil {
		t.Fatal(err)
	}
	chain, servingKey := pkitest.Leaf(t, c.Issuer, id, now.Add(-time.Minute), 12*time.Hour)
	serving := tls.Certificate{PrivateKey: servingKey, Leaf: chain[0]}
	for _, cert := range chain {
		serving.Certificate = append(serving.Certificate, cert.Raw)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS13})))
	identityv1.RegisterIdentityServer(gs, server)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = l.Addr().String()
	go gs.Serve(l)
	t.Cleanup(func() {
		server.Close()
		gs.Stop()
	})
	return c
}
