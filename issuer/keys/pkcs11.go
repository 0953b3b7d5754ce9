//go:build cgo && !nopkcs11

package keys

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/pkcs11"
)

// pkcs11Built says whether this binary has PKCS#11 support.
const pkcs11Built = true

// openPKCS11 opens the module and finds (or creates) the key uri names.
func openPKCS11(ctx context.Context, uri string, create bool) (crypto.Signer, func() error, error) {
	km, err := pkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: uri})
	if err != nil {
		return nil, nil, fmt.Errorf("keys: open the PKCS#11 token of %s: %w", Redact(uri), err)
	}
	s, err := km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: uri})
	if err != nil && create && errors.Is(err, apiv1.NotFoundError{}) {
		if _, err = km.CreateKey(&apiv1.CreateKeyRequest{Name: uri, SignatureAlgorithm: apiv1.ECDSAWithSHA256}); err == nil {
			s, err = km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: uri})
		}
	}
	if err != nil {
		_ = km.Close()
		if errors.Is(err, apiv1.NotFoundError{}) {
			return nil, nil, fmt.Errorf("keys: no key %s in the token: create it first with the HSM's tools, e.g. `pkcs11-tool --module MODULE --login --keypairgen --key-type EC:prime256v1 --id HEX --label LABEL --sensitive`", Redact(uri))
		}
		return nil, nil, fmt.Errorf("keys: key %s: %w", Redact(uri), err)
	}
	return s, km.Close, nil
}
