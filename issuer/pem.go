package issuer

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/meshid/meshid/bundle"
)

// CertPEM returns the issuing certificate and its chain as PEM, issuing
// certificate first: the tls.crt of a kubernetes.io/tls Secret.
func (kp *KeyPair) CertPEM() []byte {
	return bundle.Encode(kp.Certificates())
}

// KeyPEM returns the private key as a PKCS#8 PEM block: the tls.key of a
// kubernetes.io/tls Secret. Write it only to files of mode 0600.
func (kp *KeyPair) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
	if err != nil {
		return nil, fmt.Errorf("issuer: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
