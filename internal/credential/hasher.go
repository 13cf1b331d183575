package credential

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"runtime"

	"golang.org/x/crypto/argon2"
)

// OWASP Password Storage Cheat Sheet, argon2id, first option (SPEC §3).
const (
	DefaultMemory  uint32 = 19 * 1024 // KiB
	DefaultTime    uint32 = 2
	DefaultThreads uint8  = 1

	saltLen = 16
	keyLen  = 32
)

// HasherConfig sets the argon2id cost. Zero values take the defaults.
type HasherConfig struct {
	// Memory is the argon2 memory cost in KiB (default 19456 = 19 MiB).
	Memory uint32
	// Time is the number of passes (default 2).
	Time uint32
	// Threads is the argon2 parallelism (default 1).
	Threads uint8
	// MaxConcurrent bounds the hashes computed at once, so a login flood
	// queues instead of allocating Memory per request without limit
	// (default runtime.GOMAXPROCS(0)).
	MaxConcurrent int
}

// Hasher hashes and verifies secrets (passwords, PINs) with argon2id and
// encodes them as PHC strings, so the cost can change without a migration.
// It is safe for concurrent use.
type Hasher struct {
	params phcHash // memory, time, threads; salt and key unused
	slots  chan struct{}
	// dummy has the current parameters, a random salt and a zero key; it
	// stands in for a stored hash that is missing, unparsable or too costly.
	dummy    phcHash
	dummyPHC string // dummy.String(), for VerifyDummy
	// idKey is argon2.IDKey; a field so tests can observe the concurrency
	// bound without paying for real hashes.
	idKey func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte
}

// NewHasher fills in the defaults of cfg and validates it.
func NewHasher(cfg HasherConfig) (*Hasher, error) {
	if cfg.Memory == 0 {
		cfg.Memory = DefaultMemory
	}
	if cfg.Time == 0 {
		cfg.Time = DefaultTime
	}
	if cfg.Threads == 0 {
		cfg.Threads = DefaultThreads
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = runtime.GOMAXPROCS(0)
	}
	// The same bounds as parsePHC: a hash we write must be one we can read.
	switch {
	case cfg.Memory < 8*uint32(cfg.Threads) || cfg.Memory > maxMemoryKiB:
		return nil, fmt.Errorf("%w: hasher Memory %d KiB outside %d..%d", ErrInvalidConfig,
			cfg.Memory, 8*uint32(cfg.Threads), maxMemoryKiB)
	case cfg.Time > maxTime:
		return nil, fmt.Errorf("%w: hasher Time %d above %d", ErrInvalidConfig, cfg.Time, maxTime)
	case cfg.MaxConcurrent < 0:
		return nil, fmt.Errorf("%w: hasher MaxConcurrent %d is negative", ErrInvalidConfig, cfg.MaxConcurrent)
	}

	h := &Hasher{
		params: phcHash{memory: cfg.Memory, time: cfg.Time, threads: cfg.Threads},
		slots:  make(chan struct{}, cfg.MaxConcurrent),
		idKey:  argon2.IDKey,
	}
	// The dummy needs the current parameters and the real salt and key
	// sizes, not a valid key: VerifyDummy only has to cost the same.
	dummy := h.params
	dummy.salt = make([]byte, saltLen)
	dummy.key = make([]byte, keyLen)
	if _, err := rand.Read(dummy.salt); err != nil {
		return nil, fmt.Errorf("credential: read random dummy salt: %w", err)
	}
	h.dummy, h.dummyPHC = dummy, dummy.String()
	return h, nil
}

// MemoryBound is the argon2 block memory, in bytes, that the hashes in
// flight hold at most at the configured cost: MaxConcurrent × Memory KiB
// (38 MiB with the defaults on 2 cores). x/crypto/argon2 allocates it
// afresh for every hash and leaves it to the garbage collector, so a process
// can derive its soft memory limit (runtime/debug.SetMemoryLimit) from it.
// A stored hash may ask for up to 4× Memory (see Verify); such rows are
// exceptions and this figure leaves them out.
func (h *Hasher) MemoryBound() int64 {
	return int64(cap(h.slots)) * int64(h.params.memory) << 10
}

// Hash returns the PHC string of secret under a fresh random salt. It waits
// for a free slot, giving up when ctx ends.
func (h *Hasher) Hash(ctx context.Context, secret string) (string, error) {
	out := h.params
	out.salt = make([]byte, saltLen)
	if _, err := rand.Read(out.salt); err != nil {
		return "", fmt.Errorf("credential: read random salt: %w", err)
	}
	key, err := h.derive(ctx, secret, out, keyLen)
	if err != nil {
		return "", err
	}
	out.key = key
	return out.String(), nil
}

// Verify reports whether secret matches the PHC string encoded. needsRehash
// is true only on a match whose parameters (cost, salt or key size) differ
// from the hasher's, so the caller can store Hash(secret) while it still has
// the secret in hand.
//
// Verify checks only a canonical $argon2id$v=19$ string (see parsePHC) whose
// cost stays within these bounds, where M, T and P are the configured memory
// (KiB), passes and threads:
//
//   - memory m ≤ 4·M KiB (and argon2's own floor 8·p ≤ m),
//   - work m·t ≤ 4·M·T, with 1 ≤ t ≤ 100,
//   - threads 1 ≤ p ≤ 4·P,
//   - salt 8..64 bytes, key 16..64 bytes.
//
// Only the upper bounds are relative: after the operator raises the cost,
// older cheaper hashes still verify (and are rehashed on success); lowering
// it by up to 4× in one step (such as from OWASP's m=46 MiB, t=1 to its
// m=19 MiB, t=2) keeps every stored hash usable. A corrupt or planted row
// cannot make one login cost more memory or time than 4 ordinary ones (with
// the defaults at most 76 MiB, where m=1 GiB used to be honoured).
//
// Any other string is treated as a wrong secret that cost what VerifyDummy
// costs (a slot and a derivation at the configured parameters, so neither
// the answer's timing nor the hashing bound gives it away): ok is false and
// err wraps ErrMalformedHash. The caller should count a failed attempt and
// log err for the operator; its text names the fault and never repeats the
// stored string. If ctx ends while waiting for a slot, err wraps ctx.Err()
// instead, whatever the stored string.
func (h *Hasher) Verify(ctx context.Context, encoded, secret string) (ok, needsRehash bool, err error) {
	stored, malformed := parsePHC(encoded)
	if malformed == nil {
		malformed = h.checkCost(stored)
	}
	if malformed != nil {
		stored = h.dummy
	}
	key, err := h.derive(ctx, secret, stored, len(stored.key))
	if err != nil {
		return false, false, err
	}
	if malformed != nil {
		return false, false, malformed
	}
	if subtle.ConstantTimeCompare(key, stored.key) != 1 {
		return false, false, nil
	}
	return true, h.differs(stored), nil
}

// maxCostFactor bounds a stored hash's memory, work and threads relative to
// the configured ones (see Verify).
const maxCostFactor = 4

// checkCost refuses a stored hash that would cost more than maxCostFactor
// ordinary ones. parsePHC has checked the absolute bounds; uint64 keeps the
// products exact.
func (h *Hasher) checkCost(stored phcHash) error {
	cfg := h.params
	m, t := uint64(stored.memory), uint64(stored.time)
	maxM := maxCostFactor * uint64(cfg.memory)
	maxWork := maxM * uint64(cfg.time)
	maxP := maxCostFactor * int(cfg.threads)
	switch {
	case m > maxM:
		return fmt.Errorf("%w: m=%d KiB above %d (%d× the configured %d)",
			ErrMalformedHash, m, maxM, maxCostFactor, cfg.memory)
	case m*t > maxWork:
		return fmt.Errorf("%w: m·t=%d·%d above %d (%d× the configured %d·%d)",
			ErrMalformedHash, m, t, maxWork, maxCostFactor, cfg.memory, cfg.time)
	case int(stored.threads) > maxP:
		return fmt.Errorf("%w: p=%d above %d (%d× the configured %d)",
			ErrMalformedHash, stored.threads, maxP, maxCostFactor, cfg.threads)
	}
	return nil
}

// VerifyDummy costs what Verify costs for a hash with the current
// parameters. Call it when the account does not exist (or has no secret)
// so the answer time does not tell whether it does. The error is non-nil
// only when ctx ends while waiting for a slot.
func (h *Hasher) VerifyDummy(ctx context.Context) error {
	// Same path as Verify, parse included; the result is meaningless.
	_, _, err := h.Verify(ctx, h.dummyPHC, "latchkey dummy secret")
	return err
}

// derive runs argon2id with the cost and salt of p, holding a slot.
func (h *Hasher) derive(ctx context.Context, secret string, p phcHash, size int) ([]byte, error) {
	// select picks at random among ready cases: without this check a
	// request whose client has gone would still be hashed when a slot is free.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("credential: wait for a hashing slot: %w", err)
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("credential: wait for a hashing slot: %w", ctx.Err())
	}
	defer func() { <-h.slots }()
	return h.idKey([]byte(secret), p.salt, p.time, p.memory, p.threads, uint32(size)), nil
}

func (h *Hasher) differs(stored phcHash) bool {
	return stored.memory != h.params.memory ||
		stored.time != h.params.time ||
		stored.threads != h.params.threads ||
		len(stored.salt) != saltLen ||
		len(stored.key) != keyLen
}
