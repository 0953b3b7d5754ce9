//go:build !cgo || nopkcs11

package keys

import (
	"context"
	"crypto"
)

// pkcs11Built says whether this binary has PKCS#11 support.
const pkcs11Built = false

func openPKCS11(context.Context, string, bool) (crypto.Signer, func() error, error) {
	return nil, nil, ErrUnsupported
}
