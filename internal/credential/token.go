package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// tokenBytes is 256 bits (SPEC §3): guessing is hopeless even without rate
// limits, and the hash need not be slow.
const tokenBytes = 32

// NewToken returns a random token for a link (base64url, no padding, 43
// characters) and the SHA-256 to store in its place, so a database leak
// yields no usable links.
func NewToken() (token string, hash [32]byte, err error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, fmt.Errorf("credential: read random token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken is the stored form of a token: the SHA-256 of its text as it
// appears in the link. A plain hash suffices, unlike for passwords, because
// the token carries 256 bits of entropy; lookups by hash stay exact.
func HashToken(token string) [32]byte {
	return sha256.Sum256([]byte(token))
}
