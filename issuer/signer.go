package issuer

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"
)

// Signer signs leaf certificates.
type Signer interface {
	// Sign signs a leaf for p.PublicKey from p.Template. The signer sets the
	// issuer fields, caps NotAfter at its own certificate's NotAfter, and
	// returns the chain it built.
	Sign(ctx context.Context, p LeafParams) (*Issued, error)
}

// LeafParams describes one leaf to sign.
type LeafParams struct {
	// Template holds the leaf's fields; Sign does not modify it. Required.
	Template *x509.Certificate
	// PublicKey is the key the leaf certifies. Required.
	PublicKey crypto.PublicKey
}

// Issued is a signed leaf and the chain that goes with it.
type Issued struct {
	// DER is the signed certificate. It is not parsed again: the CA sends it
	// as it is, and crypto/x509 has already verified its signature.
	DER []byte
	// Intermediates lead from Leaf's issuer towards an anchor, issuer first,
	// anchors excluded.
	Intermediates []*x509.Certificate
	// Serial and NotAfter repeat the leaf's, for callers that log them.
	Serial   *big.Int
	NotAfter time.Time
	// IssuerFingerprint is the hex SHA-256 of the issuing certificate.
	IssuerFingerprint string
}

// Certificate parses DER, for the callers that need the leaf's fields.
func (i *Issued) Certificate() (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(i.DER)
	if err != nil {
		return nil, fmt.Errorf("issuer: parse signed leaf: %w", err)
	}
	return c, nil
}
