package oidc_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshid/meshid/ca/oidc"
)

func TestCheckIssuer(t *testing.T) {
	for issuer, ok := range map[string]bool{
		"https://oidc.example.com":        true,
		"https://oidc.example.com/mesh":   true,
		"http://127.0.0.1:8080":           true,
		"http://oidc.example.com":         false,
		"https://oidc.example.com/":       false,
		"https://oidc.example.com?x=1":    false,
		"https://u@oidc.example.com":      false,
		"oidc.example.com":                false,
		"ftp://oidc.example.com":          false,
		"https://oidc.example.com/#frag":  false,
		"https://oidc.example.com/a/b/#f": false,
	} {
		if err := oidc.CheckIssuer(issuer); (err == nil) != ok {
			t.Errorf("%s: error %v, want ok=%v", issuer, err, ok)
		}
	}
}

func TestHandler(t *testing.T) {
	var jwks []byte
	h, err := oidc.Handler(oidc.Config{Issuer: "https://oidc.example.com/mesh", JWKS: func() []byte { return jwks }})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, hdr ...string) *http.Response {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	resp := get("/mesh/.well-known/openid-configuration")
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %v", resp.StatusCode, err)
	}
	if doc["issuer"] != "https://oidc.example.com/mesh" || doc["jwks_uri"] != "https://oidc.example.com/mesh/keys" {
		t.Fatalf("discovery document %v", doc)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Fatalf("Cache-Control %q", cc)
	}
	if resp := get("/mesh/keys"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("keys before any key: %d, want 503", resp.StatusCode)
	}
	jwks = []byte(`{"keys":[]}`)
	resp = get("/mesh/keys")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != string(jwks) {
		t.Fatalf("keys: %d %s", resp.StatusCode, body)
	}
	if resp := get("/mesh/keys", "If-None-Match", resp.Header.Get("ETag")); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("keys with the ETag: %d, want 304", resp.StatusCode)
	}
	if resp := get("/.well-known/openid-configuration"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("outside the issuer's path: %d", resp.StatusCode)
	}
	r := httptest.NewRequest(http.MethodPost, "/mesh/keys", strings.NewReader("x"))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", w.Code)
	}
}
