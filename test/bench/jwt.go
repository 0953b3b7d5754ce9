package bench

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca/jwtkey"
)

// RawJWT is the raw limit of minting JWT-SVIDs: jwtkey.Sign (go-jose,
// ES256) of the claims meshid-ca signs, with one key, from workers
// goroutines for d, per second (no network, no TLS, no request checks).
func RawJWT(workers int, d time.Duration) (float64, error) {
	now := time.Now()
	key, err := jwtkey.Generate(now, now, jwtkey.Policy{Lifetime: time.Hour, PublishLead: time.Minute, MaxTTL: time.Hour})
	if err != nil {
		return 0, err
	}
	id := spiffeid.RequireFromString(WorkloadID("bench", 0))
	return tightLoop(workers, d, func() error {
		_, err := jwtkey.Sign(key, jwtkey.Claims{Subject: id, Audience: []string{"vault"}, IssuedAt: now, Expiry: now.Add(5 * time.Minute)})
		return err
	})
}
