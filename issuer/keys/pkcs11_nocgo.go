//go:build !cgo || nopkcs11

package keys

import (
	"context"
	"crypto"
)

func openPKCS11(context.Context, string, bool) (crypto.Signer, func() error, error) {
	return nil, nil, ErrUnsupported
}
