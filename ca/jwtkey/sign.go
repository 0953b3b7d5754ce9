package jwtkey

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Claims is what a JWT-SVID says.
type Claims struct {
	// Subject is the workload's SPIFFE ID.
	Subject spiffeid.ID
	// Audience must not be empty.
	Audience []string
	// Issuer is the "iss" claim (the OIDC issuer URL); empty leaves it out.
	Issuer string
	// IssuedAt and Expiry bound the JWT.
	IssuedAt, Expiry time.Time
}

// Sign signs c with k as an ES256 JWT whose header names k's ID and type
// JWT.
func Sign(k Key, c Claims) (string, error) {
	if c.Subject.IsZero() || len(c.Audience) == 0 || !c.IssuedAt.Before(c.Expiry) {
		return "", errors.New("jwtkey: a JWT-SVID needs a subject, an audience and an expiry after its issue time")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.Signer, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("jwtkey: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject: c.Subject.String(), Audience: jwt.Audience(c.Audience), Issuer: c.Issuer,
		IssuedAt: jwt.NewNumericDate(c.IssuedAt), Expiry: jwt.NewNumericDate(c.Expiry),
	}).Serialize()
	if err != nil {
		return "", fmt.Errorf("jwtkey: sign: %w", err)
	}
	return tok, nil
}
