package health_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation/health"
)

// TestJWTRows: the key Secret's row (the key that signs, the next
// rotation, its successor) and each replica's: a key some replica signs
// with that another's JWKS lacks is a failure.
func TestJWTRows(t *testing.T) {
	now := time.Now()
	year := 365 * 24 * time.Hour
	anchor := ca(t, nil, "anchor", now.Add(-time.Hour), year)
	iss := ca(t, anchor, "issuer", now.Add(-time.Hour), 48*time.Hour)
	a := health.JWTKey{ID: "aaaa", Created: now.Add(-20 * time.Hour), NotBefore: now.Add(-20 * time.Hour), NotAfter: now.Add(30 * time.Minute)}
	b := health.JWTKey{ID: "bbbb", Created: now.Add(-5 * time.Hour), NotBefore: a.NotAfter, NotAfter: a.NotAfter.Add(24 * time.Hour)}
	replica := func(name, signing string, published ...string) fleet.Report {
		r := report(name, now, iss, anchor)
		r.JWT = &fleet.JWTKeys{Signing: signing, SigningNotAfter: a.NotAfter, Published: published}
		return r
	}
	for _, tc := range []struct {
		name    string
		keys    *health.JWTKeys
		reports []fleet.Report
		check   string
		status  health.Status
		detail  string
	}{
		{"successor published", &health.JWTKeys{Name: "meshid/meshid-jwt-keys", Keys: []health.JWTKey{a, b}}, nil,
			"jwt keys meshid/meshid-jwt-keys", health.OK, "key aaaa signs, made 20h00m ago; next rotation"},
		{"no successor near the rotation", &health.JWTKeys{Name: "meshid/meshid-jwt-keys", Keys: []health.JWTKey{a}}, nil,
			"jwt keys meshid/meshid-jwt-keys", health.Warn, "no successor is published yet"},
		{"no key signs", &health.JWTKeys{Name: "meshid/meshid-jwt-keys", Keys: []health.JWTKey{b}}, nil,
			"jwt keys meshid/meshid-jwt-keys", health.Fail, "no key signs now"},
		{"corrupt", &health.JWTKeys{Name: "meshid/meshid-jwt-keys", Err: errors.New("jwtkey: jwt-keys.json is not a key set")}, nil,
			"jwt keys meshid/meshid-jwt-keys", health.Fail, "not a key set"},
		{"unreadable", &health.JWTKeys{Name: "meshid/meshid-jwt-keys", ReadErr: errors.New("Secret: forbidden")}, nil,
			"jwt keys meshid/meshid-jwt-keys", health.Warn, "not checked"},
		{"replicas agree", nil, []fleet.Report{replica("ca-0", "aaaa", "aaaa", "bbbb"), replica("ca-1", "aaaa", "aaaa", "bbbb")},
			"jwt keys published by replica ca-1", health.OK, "signs with aaaa, publishes 2 keys"},
		{"a signing key missing from a JWKS", nil, []fleet.Report{replica("ca-0", "bbbb", "aaaa", "bbbb"), replica("ca-1", "aaaa", "aaaa")},
			"jwt keys published by replica ca-1", health.Fail, "its JWKS lacks bbbb"},
		{"a replica without a key", nil, []fleet.Report{replica("ca-0", "", "aaaa")},
			"jwt keys published by replica ca-0", health.Fail, "signs no JWT-SVIDs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, now, []*issuer.KeyPair{anchor}, iss)
			in.JWT = tc.keys
			if tc.reports != nil {
				in.Reports = &health.Reports{Name: "fleet", All: tc.reports}
			}
			rep := health.Run(in)
			got := row(t, rep, tc.check)
			if got.Status != tc.status || !strings.Contains(got.Detail, tc.detail) || (tc.status != health.OK && got.Hint == "") {
				t.Fatalf("row %+v; want %s with %q and a hint", got, tc.status, tc.detail)
			}
			// The key that signs has its next rotation as the row's
			// expiry (the dashboard's timeline), and stays out of the
			// time to outage.
			if tc.keys != nil && len(tc.keys.Keys) > 0 && tc.keys.Keys[0].ID == "aaaa" {
				if got.Expires == nil || !got.Expires.Equal(a.NotAfter) || strings.HasPrefix(rep.OutageWhat, "jwt") {
					t.Fatalf("row expires %v, outage %q; want %v and not the JWT key", got.Expires, rep.OutageWhat, a.NotAfter)
				}
			}
		})
	}
	// Without JWT-SVIDs: no row.
	for _, r := range health.Run(input(t, now, []*issuer.KeyPair{anchor}, iss)).Rows {
		if strings.HasPrefix(r.Check, "jwt") {
			t.Fatalf("a JWT row without JWT-SVIDs: %+v", r)
		}
	}
}
