package credential

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrMalformedHash is wrapped by Verify when a stored string is not an
// argon2id PHC string this package will check: unparsable, or asking for
// more than the bounds documented on Verify. It signals corrupt, foreign or
// planted data, never a wrong secret. Messages wrapping it name the fault
// and the numeric parameters, never text from the stored string, which
// might be a secret stored by mistake.
var ErrMalformedHash = errors.New("credential: malformed password hash")

// Absolute bounds on a PHC string, for what this package writes (the
// configuration) and reads. Verify applies tighter ones, relative to the
// configured cost, to what it reads.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 100
	minSaltLen   = 8 // the reference implementation's ARGON2_MIN_SALT_LENGTH
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 64
)

const (
	phcAlgorithm = "argon2id"
	phcVersion   = "v=19" // argon2.Version (0x13); x/crypto implements no other
)

// b64 is the PHC encoding: standard alphabet without padding. Strict mode
// rejects non-zero trailing bits, so each hash has exactly one spelling.
var b64 = base64.RawStdEncoding.Strict()

// phcHash is a parsed $argon2id$ string.
type phcHash struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// String encodes h as the reference implementation does.
func (h phcHash) String() string {
	return fmt.Sprintf("$%s$%s$m=%d,t=%d,p=%d$%s$%s", phcAlgorithm, phcVersion,
		h.memory, h.time, h.threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// parsePHC accepts exactly the canonical form String produces, so that a
// stored value either round-trips or is reported, never half-understood.
func parsePHC(s string) (phcHash, error) {
	var h phcHash
	fields := strings.Split(s, "$")
	// "" before the leading "$", then algorithm, version, params, salt, key.
	if len(fields) != 6 || fields[0] != "" {
		return h, fmt.Errorf("%w: want 5 $-separated fields", ErrMalformedHash)
	}
	if fields[1] != phcAlgorithm {
		return h, fmt.Errorf("%w: algorithm is not %s", ErrMalformedHash, phcAlgorithm)
	}
	if fields[2] != phcVersion {
		return h, fmt.Errorf("%w: version is not %s", ErrMalformedHash, phcVersion)
	}

	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return h, fmt.Errorf("%w: want parameters m,t,p", ErrMalformedHash)
	}
	m, err := parseParam(params[0], "m", 32)
	if err != nil {
		return h, err
	}
	t, err := parseParam(params[1], "t", 32)
	if err != nil {
		return h, err
	}
	p, err := parseParam(params[2], "p", 8)
	if err != nil {
		return h, err
	}
	h.memory, h.time, h.threads = uint32(m), uint32(t), uint8(p)
	switch {
	case h.threads < 1:
		return h, fmt.Errorf("%w: p=%d below 1", ErrMalformedHash, h.threads)
	case h.time < 1 || h.time > maxTime:
		return h, fmt.Errorf("%w: t=%d outside 1..%d", ErrMalformedHash, h.time, maxTime)
	case h.memory < 8*uint32(h.threads) || h.memory > maxMemoryKiB:
		return h, fmt.Errorf("%w: m=%d outside %d..%d", ErrMalformedHash, h.memory, 8*uint32(h.threads), maxMemoryKiB)
	}

	if h.salt, err = decodeB64(fields[4], "salt", minSaltLen, maxSaltLen); err != nil {
		return h, err
	}
	if h.key, err = decodeB64(fields[5], "hash", minKeyLen, maxKeyLen); err != nil {
		return h, err
	}
	return h, nil
}

// parseParam reads "name=decimal". Leading zeros and signs are refused
// (strconv would accept "+1" and "007"), keeping the form canonical.
func parseParam(kv, name string, bitSize int) (uint64, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k != name {
		return 0, fmt.Errorf("%w: want parameter %s", ErrMalformedHash, name)
	}
	if v == "" || v[0] < '0' || v[0] > '9' || (v[0] == '0' && len(v) > 1) {
		return 0, fmt.Errorf("%w: parameter %s is not a canonical decimal", ErrMalformedHash, name)
	}
	n, err := strconv.ParseUint(v, 10, bitSize)
	if err != nil {
		// Not wrapped: strconv's message repeats the input.
		return 0, fmt.Errorf("%w: parameter %s is not a %d-bit decimal", ErrMalformedHash, name, bitSize)
	}
	return n, nil
}

func decodeB64(s, what string, minLen, maxLen int) ([]byte, error) {
	// The decoder skips '\r' and '\n'; checking the encoded length first
	// keeps the canonical-form test below meaningful and bounds the work.
	if len(s) > b64.EncodedLen(maxLen) {
		return nil, fmt.Errorf("%w: %s longer than %d bytes", ErrMalformedHash, what, maxLen)
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformedHash, what, err)
	}
	if b64.EncodeToString(b) != s {
		return nil, fmt.Errorf("%w: %s is not canonical base64", ErrMalformedHash, what)
	}
	if len(b) < minLen || len(b) > maxLen {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d..%d", ErrMalformedHash, what, len(b), minLen, maxLen)
	}
	return b, nil
}
