package jwtkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DataKey is the key of the Secret's data that holds the key set.
const DataKey = "jwt-keys.json"

// Key is one JWT signing key and its lifecycle.
type Key struct {
	// ID is the JWK "kid": the hex SHA-256 of the public key, first 16 bytes.
	ID string
	// Created is when the key was made and published.
	Created time.Time
	// NotBefore and NotAfter bound when it signs.
	NotBefore, NotAfter time.Time
	// Signer is the private key (ECDSA P-256).
	Signer crypto.Signer
}

// Phase is where a key is in its lifecycle at one moment.
type Phase string

const (
	// Published: in the JWKS, not signing yet.
	Published Phase = "published"
	// Active: signing (and published).
	Active Phase = "active"
	// Retiring: no longer signing; published until the JWTs it signed expire.
	Retiring Phase = "retiring"
	// Retired: past its grace; dropped from the set and the JWKS.
	Retired Phase = "retired"
)

// Policy paces the lifecycle.
type Policy struct {
	// Lifetime is how long a key signs.
	Lifetime time.Duration
	// PublishLead is how long a key is published before it signs: longer
	// than any verifier caches the JWKS.
	PublishLead time.Duration
	// MaxTTL is the longest JWT lifetime; a key stays published this long
	// after it stops signing.
	MaxTTL time.Duration
}

// Validate says what is wrong with p.
func (p Policy) Validate() error {
	if p.Lifetime <= 0 || p.PublishLead < 0 || p.MaxTTL <= 0 {
		return errors.New("jwtkey: Lifetime and MaxTTL must be positive, PublishLead not negative")
	}
	if p.PublishLead >= p.Lifetime {
		return fmt.Errorf("jwtkey: the publish lead (%s) must be shorter than a key's lifetime (%s)", p.PublishLead, p.Lifetime)
	}
	return nil
}

// PhaseAt is k's phase at now under p.
func (k Key) PhaseAt(now time.Time, p Policy) Phase {
	switch {
	case now.Before(k.NotBefore):
		return Published
	case now.Before(k.NotAfter):
		return Active
	case now.Before(k.NotAfter.Add(p.MaxTTL)):
		return Retiring
	}
	return Retired
}

// Generate returns a new ES256 key signing from notBefore for p.Lifetime,
// created at now.
func Generate(now, notBefore time.Time, p Policy) (Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("jwtkey: generate: %w", err)
	}
	id, err := keyID(priv.Public())
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Created: now, NotBefore: notBefore, NotAfter: notBefore.Add(p.Lifetime), Signer: priv}, nil
}

func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("jwtkey: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// Next is the key set to hold at now: keys past their grace dropped, a key
// that signs now (made at once only when none does: the first start, or a
// CA that was down past the active key's end), and the successor of the
// newest key once now is within PublishLead of its end. changed says
// whether keys must be written back. gen makes a key (Generate in
// production).
func Next(keys []Key, now time.Time, p Policy, gen func(now, notBefore time.Time, p Policy) (Key, error)) (next []Key, changed bool, err error) {
	for _, k := range keys {
		if k.PhaseAt(now, p) == Retired {
			changed = true
			continue
		}
		next = append(next, k)
	}
	if _, ok := ActiveAt(next, now); !ok {
		k, err := gen(now, now, p)
		if err != nil {
			return keys, false, err
		}
		next, changed = append(next, k), true
	}
	newest := slices.MaxFunc(next, func(a, b Key) int { return a.NotAfter.Compare(b.NotAfter) })
	if !now.Before(newest.NotAfter.Add(-p.PublishLead)) {
		k, err := gen(now, newest.NotAfter, p)
		if err != nil {
			return keys, false, err
		}
		next, changed = append(next, k), true
	}
	return next, changed, nil
}

// ActiveAt is the key that signs at now: of those inside their signing
// window, the one that started last.
func ActiveAt(keys []Key, now time.Time) (Key, bool) {
	var best Key
	ok := false
	for _, k := range keys {
		if now.Before(k.NotBefore) || !now.Before(k.NotAfter) {
			continue
		}
		if !ok || k.NotBefore.After(best.NotBefore) {
			best, ok = k, true
		}
	}
	return best, ok
}

// NextRotation is when the key after the active one starts signing: the
// active key's NotAfter; zero when none is active.
func NextRotation(keys []Key, now time.Time) time.Time {
	k, ok := ActiveAt(keys, now)
	if !ok {
		return time.Time{}
	}
	return k.NotAfter
}

// NextChange is the next moment Next would change keys: the newest key's
// successor falls due, or a key's grace ends; zero for no keys.
func NextChange(keys []Key, p Policy) time.Time {
	if len(keys) == 0 {
		return time.Time{}
	}
	newest := slices.MaxFunc(keys, func(a, b Key) int { return a.NotAfter.Compare(b.NotAfter) })
	at := newest.NotAfter.Add(-p.PublishLead)
	for _, k := range keys {
		if end := k.NotAfter.Add(p.MaxTTL); end.Before(at) {
			at = end
		}
	}
	return at
}

// JWKS is the published public keys at now: every key not retired, as
// JWKs with use "sig" and alg ES256.
func JWKS(keys []Key, now time.Time, p Policy) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		if k.PhaseAt(now, p) == Retired {
			continue
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Signer.Public(), KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return set
}

// stored is a Key as the Secret holds it.
type stored struct {
	ID        string    `json:"kid"`
	Created   time.Time `json:"created"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	PKCS8     []byte    `json:"pkcs8"`
}

// Marshal encodes keys for the Secret's DataKey.
func Marshal(keys []Key) ([]byte, error) {
	out := make([]stored, 0, len(keys))
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
		if err != nil {
			return nil, fmt.Errorf("jwtkey: key %s: %w", k.ID, err)
		}
		out = append(out, stored{ID: k.ID, Created: k.Created, NotBefore: k.NotBefore, NotAfter: k.NotAfter, PKCS8: der})
	}
	return json.Marshal(out)
}

// Unmarshal decodes what Marshal wrote, checking every key: an ECDSA P-256
// key whose ID matches it and whose window is not empty. Empty data is an
// empty set.
func Unmarshal(data []byte) ([]Key, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var in []stored
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("jwtkey: %s is not a key set: %w; delete the key so the CA makes new keys (JWTs signed by the old ones will fail)", DataKey, err)
	}
	keys := make([]Key, 0, len(in))
	for i, s := range in {
		priv, err := x509.ParsePKCS8PrivateKey(s.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("jwtkey: key %d (%s): %w", i, s.ID, err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("jwtkey: key %d (%s) is not an ECDSA P-256 key (ES256)", i, s.ID)
		}
		id, err := keyID(ec.Public())
		if err != nil {
			return nil, err
		}
		if id != s.ID {
			return nil, fmt.Errorf("jwtkey: key %d is named %s but its public key is %s", i, s.ID, id)
		}
		if !s.NotBefore.Before(s.NotAfter) {
			return nil, fmt.Errorf("jwtkey: key %s: not_before %s is not before not_after %s", s.ID, s.NotBefore, s.NotAfter)
		}
		keys = append(keys, Key{ID: s.ID, Created: s.Created, NotBefore: s.NotBefore, NotAfter: s.NotAfter, Signer: ec})
	}
	return keys, nil
}
