package certinfo

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Contents is what a file of certificates holds, and the private keys
// beside them (a cert-and-key file, as many tools write).
type Contents struct {
	Certs []*x509.Certificate
	Keys  []Key
	// DER says the input was one or more DER certificates, not PEM.
	DER bool
}

// Key is a private key found in the input: where, and its public half.
// Its bytes are not kept.
type Key struct {
	// Block is the PEM block it was in, from 1.
	Block int
	// Type is the key's algorithm and size ("ECDSA P-256"), or why it
	// cannot be read ("encrypted").
	Type string
	// Public is its public key; nil when it could not be read.
	Public crypto.PublicKey
}

// Read reads PEM certificates and private keys, or DER certificates (one,
// or several one after another). Other PEM blocks are refused.
func Read(data []byte) (*Contents, error) {
	if b, _ := pem.Decode(data); b == nil {
		certs, err := x509.ParseCertificates(data)
		if err != nil || len(certs) == 0 {
			return nil, errors.New("no PEM CERTIFICATE block found, and not DER certificates either")
		}
		return &Contents{Certs: certs, DER: true}, nil
	}
	c := &Contents{}
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("block %d: %w", n, err)
			}
			c.Certs = append(c.Certs, cert)
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			pub, err := publicOf(block)
			if err != nil {
				return nil, fmt.Errorf("block %d (%s): %w", n, block.Type, err)
			}
			c.Keys = append(c.Keys, Key{Block: n, Type: KeyType(pub), Public: pub})
		case "ENCRYPTED PRIVATE KEY":
			c.Keys = append(c.Keys, Key{Block: n, Type: "encrypted"})
		default:
			return nil, fmt.Errorf("block %d is %q; inspect reads certificates and their private keys", n, block.Type)
		}
	}
	switch {
	case len(c.Certs) == 0 && len(c.Keys) > 0:
		return nil, fmt.Errorf("only a private key (%s), no certificate: inspect reads certificates, and the keys beside them", c.Keys[0].Type)
	case len(c.Certs) == 0:
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return c, nil
}

// publicOf parses a private key block and returns its public key.
func publicOf(block *pem.Block) (crypto.PublicKey, error) {
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, errors.New("the key does not parse") // never the parser's text: it may quote key bytes
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k.Public(), nil
	case *rsa.PrivateKey:
		return k.Public(), nil
	case ed25519.PrivateKey:
		return k.Public(), nil
	}
	return nil, fmt.Errorf("keys of type %T are not supported", key)
}

// Matches returns the index of the certificate whose public key is k's,
// or -1.
func (k Key) Matches(certs []*x509.Certificate) int {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := k.Public.(equaler)
	if !ok {
		return -1
	}
	for i, c := range certs {
		if pub.Equal(c.PublicKey) {
			return i
		}
	}
	return -1
}
