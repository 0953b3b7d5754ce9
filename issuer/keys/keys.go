package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
)

// Location names where a key lives, as `meshid check` and the fleet report
// show it.
type Location string

const (
	// Memory: generated in the process, lost when it exits.
	Memory Location = "memory"
	// PKCS11: in a PKCS#11 token; the private key never leaves it.
	PKCS11 Location = "pkcs11"
)

// ErrUnavailable is wrapped by Sign and Health when the key's module or
// token does not answer: the caller is not ready until Health succeeds.
var ErrUnavailable = errors.New("keys: the issuer key is unavailable")

// ErrUnsupported is returned by Open for a pkcs11: URI in a binary built
// without cgo.
var ErrUnsupported = errors.New("keys: this binary was built without PKCS#11 support (CGO_ENABLED=0); use a meshid-ca image built with cgo for a pkcs11: --issuer-key")

// Key is an issuer's private key, wherever it lives. It is a crypto.Signer
// safe for concurrent use.
type Key struct {
	uri      string
	location Location
	create   bool

	mu     sync.RWMutex
	signer crypto.Signer
	closer func() error
	pub    crypto.PublicKey
}

// Options say how Open treats a key that is not there yet.
type Options struct {
	// Create generates the key in the token when it does not exist yet (the
	// operator's HSM tools, e.g. pkcs11-tool --keypairgen); false means a missing key is
	// an error (meshid-ca never creates one on its own).
	Create bool
}

// Open opens the key uri names: "memory" generates an ECDSA P-256 key in
// the process; "pkcs11:..." opens (or, with o.Create, creates) a key in a
// PKCS#11 token, ECDSA P-256 when created, not extractable.
func Open(ctx context.Context, uri string, o Options) (*Key, error) {
	k := &Key{uri: uri, create: o.Create}
	if err := Check(uri); err != nil {
		return nil, err
	}
	switch {
	case uri == string(Memory):
		k.location = Memory
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("keys: generate a memory key: %w", err)
		}
		k.signer, k.closer, k.pub = key, func() error { return nil }, key.Public()
		return k, nil
	case strings.HasPrefix(uri, string(PKCS11)+":"):
		k.location = PKCS11
		s, closer, err := openPKCS11(ctx, uri, o.Create)
		if err != nil {
			return nil, err
		}
		k.signer, k.closer, k.pub = s, closer, s.Public()
		return k, nil
	}
	return nil, fmt.Errorf("keys: unknown key URI %q: use \"memory\" or pkcs11:token=NAME;id=HEX;object=LABEL?module-path=/path/module.so&pin-source=/path/pin", Redact(uri))
}

// Check says whether Open could open uri in this binary, without opening
// anything: the URI's form, and PKCS#11 support (cgo) for a pkcs11: URI.
func Check(uri string) error {
	switch {
	case uri == string(Memory):
		return nil
	case strings.HasPrefix(uri, string(PKCS11)+":"):
		if !pkcs11Built {
			return ErrUnsupported
		}
		return checkPKCS11URI(uri)
	}
	return fmt.Errorf("keys: unknown key URI %q: use \"memory\" or pkcs11:token=NAME;id=HEX;object=LABEL?module-path=/path/module.so&pin-source=/path/pin", Redact(uri))
}

// checkPKCS11URI refuses a PIN in the URI itself and a key not named by
// both id and object.
func checkPKCS11URI(uri string) error {
	opaque := strings.TrimPrefix(uri, string(PKCS11)+":")
	path, query, _ := strings.Cut(opaque, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("keys: the pkcs11 URI's query (after ?) does not parse: %w", err)
	}
	attrs := map[string]bool{}
	for _, a := range strings.Split(path, ";") {
		name, _, _ := strings.Cut(a, "=")
		attrs[name] = true
	}
	switch {
	case q.Has("pin-value") || attrs["pin-value"]:
		return errors.New("keys: the pkcs11 URI carries pin-value: never put the PIN on a command line; write it to a file (a mounted Secret) and name it with ?pin-source=FILE")
	case !q.Has("pin-source") && !attrs["pin-source"]:
		return errors.New("keys: the pkcs11 URI needs ?pin-source=FILE, a file holding the token's user PIN")
	case !attrs["token"] && !attrs["serial"] && !attrs["slot-id"]:
		return errors.New("keys: the pkcs11 URI must name the token: token=LABEL (or serial= or slot-id=)")
	case !attrs["id"] || !attrs["object"]:
		return errors.New("keys: the pkcs11 URI must name the key with both id=HEX and object=LABEL")
	}
	return nil
}

// Redact returns uri with its query (pin-source, module-path) dropped, for
// logs and errors.
func Redact(uri string) string {
	u, _, _ := strings.Cut(uri, "?")
	return u
}

// Location says where the key lives.
func (k *Key) Location() Location { return k.location }

// URI returns the key's URI without its query (Redact).
func (k *Key) URI() string { return Redact(k.uri) }

// Public returns the public key. It implements crypto.Signer.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign signs digest with the key. It implements crypto.Signer. When the
// module or token fails, the error wraps ErrUnavailable.
func (k *Key) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.RLock()
	s := k.signer
	k.mu.RUnlock()
	if s == nil {
		return nil, fmt.Errorf("%w: %s is closed", ErrUnavailable, k.URI())
	}
	sig, err := s.Sign(r, digest, opts)
	if err != nil && k.location != Memory {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, k.URI(), err)
	}
	return sig, err
}

// Health signs a test digest. If that fails for a key in a token, it opens
// the module again (the token may be back) and tries once more, so a CA
// recovers on its own; the key must still be the same one.
func (k *Key) Health(ctx context.Context) error {
	if k.probe() == nil {
		return nil
	}
	if k.location == Memory {
		return fmt.Errorf("%w: the memory key does not sign", ErrUnavailable)
	}
	s, closer, err := openPKCS11(ctx, k.uri, false)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, k.URI(), err)
	}
	if !samePublic(s.Public(), k.pub) {
		_ = closer()
		return fmt.Errorf("%w: %s now holds a different key than the one the issuer certificate was made for", ErrUnavailable, k.URI())
	}
	k.mu.Lock()
	old := k.closer
	k.signer, k.closer = s, closer
	k.mu.Unlock()
	if old != nil {
		_ = old()
	}
	return k.probe()
}

func (k *Key) probe() error {
	d := sha256.Sum256([]byte("meshid issuer key health"))
	_, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	return err
}

// Close releases the module. Sign fails after it; Close is idempotent.
func (k *Key) Close() error {
	k.mu.Lock()
	c := k.closer
	k.signer, k.closer = nil, nil
	k.mu.Unlock()
	if c == nil {
		return nil
	}
	return c()
}

// closeModule closes the signer's module without forgetting the key: what
// a lost token looks like to Sign. For tests (export_test.go).
func (k *Key) closeModule() error {
	k.mu.RLock()
	c := k.closer
	k.mu.RUnlock()
	return c()
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
