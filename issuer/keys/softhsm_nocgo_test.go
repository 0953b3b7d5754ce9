//go:build !cgo || nopkcs11

package keys_test

import (
	"context"
	"errors"
	"testing"

	"github.com/meshid/meshid/issuer/keys"
)

type softHSM struct{}

func newSoftHSM(t *testing.T) *softHSM {
	_, err := keys.Open(context.Background(), "pkcs11:token=t;id=01;object=k?pin-source=/p", keys.Options{})
	if !errors.Is(err, keys.ErrUnsupported) {
		t.Errorf("pkcs11 without cgo: %v, want ErrUnsupported", err)
	}
	t.Skip("built without cgo: no PKCS#11")
	return nil
}

func (*softHSM) uri(string, string) string               { return "" }
func (*softHSM) pointAway(*testing.T)                    {}
func (*softHSM) pointBack(*testing.T)                    {}
func (*softHSM) assertNotExtractable(*testing.T, string) {}
