package jwtkey_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshid/meshid/ca/jwtkey"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	policy = jwtkey.Policy{Lifetime: 24 * time.Hour, PublishLead: time.Hour, MaxTTL: 10 * time.Minute}
	td     = spiffeid.RequireTrustDomainFromString("cluster.local")
	web    = spiffeid.RequireFromPath(td, "/ns/default/sa/web")
)

func next(t *testing.T, keys []jwtkey.Key, now time.Time) ([]jwtkey.Key, bool) {
	t.Helper()
	out, changed, err := jwtkey.Next(keys, now, policy, jwtkey.Generate)
	if err != nil {
		t.Fatal(err)
	}
	return out, changed
}

func TestLifecycle(t *testing.T) {
	keys, changed := next(t, nil, t0)
	if !changed || len(keys) != 1 {
		t.Fatalf("first start: %d keys, changed %v; want one new key", len(keys), changed)
	}
	first := keys[0]
	if k, ok := jwtkey.ActiveAt(keys, t0); !ok || k.ID != first.ID {
		t.Fatal("the first key does not sign at once")
	}
	if _, changed := next(t, keys, t0.Add(22*time.Hour)); changed {
		t.Fatal("changed the set before the successor is due")
	}
	// Within PublishLead of the end: the successor is published, not active.
	keys, changed = next(t, keys, t0.Add(23*time.Hour))
	if !changed || len(keys) != 2 {
		t.Fatalf("%d keys, changed %v; want the successor", len(keys), changed)
	}
	second := keys[1]
	if got := second.PhaseAt(t0.Add(23*time.Hour), policy); got != jwtkey.Published {
		t.Fatalf("successor is %s before its start; want published", got)
	}
	if k, _ := jwtkey.ActiveAt(keys, t0.Add(23*time.Hour)); k.ID != first.ID {
		t.Fatal("the successor signs before its NotBefore")
	}
	if got := jwtkey.NextRotation(keys, t0.Add(23*time.Hour)); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("next rotation %s; want %s", got, t0.Add(24*time.Hour))
	}
	// After the rotation the first key retires, still published for MaxTTL.
	at := t0.Add(24*time.Hour + 5*time.Minute)
	if k, _ := jwtkey.ActiveAt(keys, at); k.ID != second.ID {
		t.Fatal("the successor does not sign after the rotation")
	}
	if got := first.PhaseAt(at, policy); got != jwtkey.Retiring {
		t.Fatalf("old key %s; want retiring", got)
	}
	if set := jwtkey.JWKS(keys, at, policy); len(set.Key(first.ID)) != 1 {
		t.Fatal("the retiring key left the JWKS inside its grace")
	}
	// After its grace it is dropped.
	keys, changed = next(t, keys, t0.Add(24*time.Hour+11*time.Minute))
	if !changed || len(keys) != 1 || keys[0].ID != second.ID {
		t.Fatalf("after the grace: %d keys, changed %v; want only the successor", len(keys), changed)
	}
}

func TestNextAfterOutage(t *testing.T) {
	keys, _ := next(t, nil, t0)
	// The CA was down past the active key's end: a key signs at once.
	later := t0.Add(72 * time.Hour)
	keys, changed := next(t, keys, later)
	if _, ok := jwtkey.ActiveAt(keys, later); !changed || !ok {
		t.Fatal("no active key after an outage")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	keys, _ := next(t, nil, t0)
	data, err := jwtkey.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	back, err := jwtkey.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].ID != keys[0].ID || !back[0].NotAfter.Equal(keys[0].NotAfter) {
		t.Fatalf("round trip lost the key: %+v", back)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	keys, _ := next(t, nil, t0)
	other, _ := next(t, nil, t0)
	der, _ := x509.MarshalPKCS8PrivateKey(other[0].Signer)
	good, _ := x509.MarshalPKCS8PrivateKey(keys[0].Signer)
	entry := func(kid string, pkcs8 []byte, nb, na time.Time) []byte {
		b, _ := json.Marshal([]map[string]any{{"kid": kid, "created": t0, "not_before": nb, "not_after": na, "pkcs8": pkcs8}})
		return b
	}
	for name, data := range map[string][]byte{
		"not json":     []byte("{"),
		"wrong kid":    entry(keys[0].ID, der, t0, t0.Add(time.Hour)),
		"not a key":    entry(keys[0].ID, []byte("junk"), t0, t0.Add(time.Hour)),
		"empty window": entry(keys[0].ID, good, t0, t0),
	} {
		if _, err := jwtkey.Unmarshal(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// bundleAt is the trust domain's JWT bundle from the JWKS at now.
func bundleAt(t *testing.T, keys []jwtkey.Key, now time.Time) *jwtbundle.Bundle {
	t.Helper()
	data, err := json.Marshal(jwtkey.JWKS(keys, now, policy))
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwtbundle.Parse(td, data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignValidates(t *testing.T) {
	keys, _ := next(t, nil, t0)
	k, _ := jwtkey.ActiveAt(keys, t0)
	tok, err := jwtkey.Sign(k, jwtkey.Claims{Subject: web, Audience: []string{"vault"}, IssuedAt: time.Now(), Expiry: time.Now().Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, bundleAt(t, keys, t0), []string{"vault"})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != web {
		t.Fatalf("sub %s; want %s", svid.ID, web)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, bundleAt(t, keys, t0), []string{"other"}); err == nil {
		t.Fatal("validated for another audience")
	}
}

func TestSignRefuses(t *testing.T) {
	keys, _ := next(t, nil, t0)
	k, _ := jwtkey.ActiveAt(keys, t0)
	if _, err := jwtkey.Sign(k, jwtkey.Claims{Subject: web, IssuedAt: t0, Expiry: t0.Add(time.Minute)}); err == nil {
		t.Fatal("signed without an audience")
	}
}

// TestAttacksRefused: tokens an attacker makes from a real one are refused
// by go-spiffe's validation against our JWKS.
func TestAttacksRefused(t *testing.T) {
	keys, _ := next(t, nil, t0)
	k, _ := jwtkey.ActiveAt(keys, t0)
	now := time.Now()
	good, err := jwtkey.Sign(k, jwtkey.Claims{Subject: web, Audience: []string{"vault"}, IssuedAt: now, Expiry: now.Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Split(good, ".")[1]
	enc := base64.RawURLEncoding.EncodeToString
	none := enc([]byte(`{"alg":"none","kid":"`+k.ID+`","typ":"JWT"}`)) + "." + payload + "."

	pubDER, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: pubDER, KeyID: k.ID}}, (&jose.SignerOptions{}).WithType("JWT"))
	hs256, _ := jwt.Signed(hs).Claims(jwt.Claims{Subject: web.String(), Audience: jwt.Audience{"vault"}, Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()

	expired, _ := jwtkey.Sign(k, jwtkey.Claims{Subject: web, Audience: []string{"vault"}, IssuedAt: now.Add(-time.Hour), Expiry: now.Add(-time.Minute)})

	// A key past its grace is no longer in the JWKS.
	retired := t0.Add(policy.Lifetime + policy.MaxTTL + time.Minute)
	later, _ := next(t, keys, retired)

	for name, c := range map[string]struct {
		token string
		b     *jwtbundle.Bundle
	}{
		"alg none":              {none, bundleAt(t, keys, t0)},
		"HS256 with public key": {hs256, bundleAt(t, keys, t0)},
		"expired":               {expired, bundleAt(t, keys, t0)},
		"retired key":           {good, bundleAt(t, later, retired)},
	} {
		if _, err := jwtsvid.ParseAndValidate(c.token, c.b, []string{"vault"}); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
}
