package health

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// JWTKeys is the JWT-SVID key Secret as check read it (its keys' IDs and
// windows only).
type JWTKeys struct {
	// Name is NAMESPACE/NAME of the Secret.
	Name string
	Keys []JWTKey
	// ReadErr is why it could not be read (a warning: the keys may be
	// fine); Err why its key set was refused (meshid-ca refuses it too).
	ReadErr, Err error
}

// JWTKey is one signing key's lifecycle.
type JWTKey struct {
	ID                           string
	Created, NotBefore, NotAfter time.Time
}

// jwtSuccessorWithin: an active key ending sooner with no successor in the
// Secret is a warning (meshid-ca publishes the successor hours before).
const jwtSuccessorWithin = time.Hour

// jwtRows: the key Secret (the key that signs, its age, the next
// rotation, its successor), and each live replica's published JWKS, which
// must hold every key any replica signs with.
func (c *checker) jwtRows() {
	logs := c.kubectl("logs", "deployment/"+c.deployment()) + " (lines 'jwt signing keys')"
	if k := c.in.JWT; k != nil {
		row := Row{Check: "jwt keys " + k.Name}
		now := c.in.Now
		var active *JWTKey
		for i, key := range k.Keys {
			if !now.Before(key.NotBefore) && now.Before(key.NotAfter) && (active == nil || key.NotBefore.After(active.NotBefore)) {
				active = &k.Keys[i]
			}
		}
		switch {
		case k.ReadErr != nil:
			row.Status, row.Detail, row.Hint = Warn, k.ReadErr.Error()+": the JWT signing keys are not checked", c.kubectl("auth", "can-i", "get", "secrets/"+objectName("", k.Name))+" says whether you may read it"
		case k.Err != nil:
			row.Status, row.Detail, row.Hint = Fail, k.Err.Error(), "meshid-ca keeps the keys it holds; see "+logs
		case active == nil:
			row.Status, row.Detail, row.Hint = Fail, fmt.Sprintf("no key signs now (%d in the Secret): every JWT-SVID request fails", len(k.Keys)), "meshid-ca makes one at its next round; see why it has not: "+logs
		default:
			next := slices.ContainsFunc(k.Keys, func(s JWTKey) bool { return !s.NotBefore.Before(active.NotAfter) })
			// On the dashboard's timeline (not in the time to outage:
			// meshid-ca rotates the key itself).
			row.Status, row.Expires = OK, &active.NotAfter
			row.Detail = fmt.Sprintf("key %s signs, made %s ago; next rotation %s (in %s)", active.ID, human(now.Sub(active.Created)), stamp(active.NotAfter), human(active.NotAfter.Sub(now)))
			if next {
				row.Detail += "; its successor is published"
			} else if active.NotAfter.Sub(now) < jwtSuccessorWithin {
				row.Status = Warn
				row.Detail += "; no successor is published yet"
				row.Hint = "meshid-ca publishes it ahead of the rotation; see why it has not: " + logs
			}
		}
		c.add(row)
	}
	var signing []string
	for _, r := range c.live {
		if r.JWT != nil && r.JWT.Signing != "" && !slices.Contains(signing, r.JWT.Signing) {
			signing = append(signing, r.JWT.Signing)
		}
	}
	for _, r := range c.live {
		if r.JWT == nil {
			continue
		}
		row := Row{Check: "jwt keys published by replica " + r.Replica, Status: OK}
		var missing []string
		for _, id := range signing {
			if !slices.Contains(r.JWT.Published, id) {
				missing = append(missing, id)
			}
		}
		switch {
		case len(missing) > 0:
			row.Status = Fail
			row.Detail = fmt.Sprintf("its JWKS lacks %s, which signs JWT-SVIDs now: a verifier that fetched this replica's keys refuses them", strings.Join(missing, ", "))
			row.Hint = "every replica reads the same key Secret; see why this one differs: " + logs
		case r.JWT.Signing == "":
			row.Status = Fail
			row.Detail = "signs no JWT-SVIDs: it holds no key in force"
			row.Hint = logs
		default:
			row.Detail = fmt.Sprintf("signs with %s, publishes %d keys", r.JWT.Signing, len(r.JWT.Published))
		}
		c.add(row)
	}
}
