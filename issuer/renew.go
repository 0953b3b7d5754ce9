package issuer

import "time"

// Renewal is spread over this part of a certificate's remaining life, so a
// fleet issued at the same moment does not renew at the same moment.
const (
	RenewFrom = 0.5
	RenewTo   = 0.7
)

// RenewAt returns when a certificate valid from now until notAfter should be
// renewed: at RenewFrom + jitter*(RenewTo-RenewFrom) of its remaining
// lifetime. jitter is clamped to [0, 1]; pass a random value.
func RenewAt(now, notAfter time.Time, jitter float64) time.Time {
	jitter = min(max(jitter, 0), 1)
	life := notAfter.Sub(now)
	if life <= 0 {
		return now
	}
	frac := RenewFrom + jitter*(RenewTo-RenewFrom)
	return now.Add(time.Duration(float64(life) * frac))
}
