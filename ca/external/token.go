package external

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/api/workload/v1alpha1"
)

// DefaultTokenTTL is how long a join token is accepted when the operator
// says nothing (meshid workload join --ttl).
const DefaultTokenTTL = 15 * time.Minute

// tokenPrefix marks a join token, so that one pasted where it does not
// belong is recognised (and secret scanners can find it).
const tokenPrefix = "meshid-join-"

// NewToken returns a fresh join token, 256 random bits, and the status
// entry that admits it until expires: only its hash is kept.
func NewToken(expires time.Time) (string, *v1alpha1.JoinToken, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("external: join token: %w", err)
	}
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return tok, &v1alpha1.JoinToken{SHA256: Hash(tok), Expires: metav1.NewTime(expires.UTC().Truncate(time.Second))}, nil
}

// Hash is the lowercase hex SHA-256 of a token, as the status keeps it.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(sum[:])
}

// matches compares a token with a stored hash in constant time.
func matches(token, sha string) bool {
	h := Hash(token)
	return len(h) == len(sha) && subtle.ConstantTimeCompare([]byte(h), []byte(sha)) == 1
}
