package credential

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"
	"golang.org/x/crypto/argon2"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// smallCost keeps unit tests fast; TestHasherDefaultParams covers the real cost.
var smallCost = HasherConfig{Memory: 64, Time: 1, Threads: 1}

func newTestHasher(t *testing.T, cfg HasherConfig) *Hasher {
	t.Helper()
	h, err := NewHasher(cfg)
	if err != nil {
		t.Fatalf("NewHasher(%+v): %v", cfg, err)
	}
	return h
}

func TestHasherHashVerify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h := newTestHasher(t, smallCost)

	tests := []struct {
		name   string
		secret string
		try    string
		wantOK bool
	}{
		{"same secret", "correct horse battery staple", "correct horse battery staple", true},
		{"other secret", "correct horse battery staple", "correct horse battery stapler", false},
		{"case differs", "Secret123", "secret123", false},
		{"unicode", "pässwörd 日本語", "pässwörd 日本語", true},
		{"empty matches empty", "", "", true},
		{"empty against secret", "secret", "", false},
		{"pin", "4829", "4829", true},
		{"pin off by one", "4829", "4828", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			encoded, err := h.Hash(ctx, tt.secret)
			if err != nil {
				t.Fatalf("Hash: %v", err)
			}
			ok, rehash, err := h.Verify(ctx, encoded, tt.try)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if ok != tt.wantOK || rehash {
				t.Errorf("Verify = (%v, %v), want (%v, false)", ok, rehash, tt.wantOK)
			}
		})
	}
}

func TestHasherEncoding(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, HasherConfig{Memory: 128, Time: 3, Threads: 2})
	a, err := h.Hash(t.Context(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Hash(t.Context(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	// 16-byte salt and 32-byte key in unpadded standard base64.
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=128,t=3,p=2\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	for _, s := range []string{a, b} {
		if !re.MatchString(s) {
			t.Errorf("Hash = %q, does not match %s", s, re)
		}
	}
	if a == b {
		t.Errorf("two hashes of one secret are equal (%q): salt not random", a)
	}
}

// The vectors were produced by the reference implementation's CLI
// (phc-winner-argon2 20171227), e.g.
// echo -n "correct horse battery staple" | argon2 somesalt12345678 -id -t 2 -m 10 -p 1 -l 32
func TestHasherVerifiesReferenceVectors(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, HasherConfig{Memory: 1024, Time: 2, Threads: 1})

	tests := []struct {
		name, encoded, secret string
		wantRehash            bool
	}{
		{
			name:    "current parameters",
			encoded: "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHQxMjM0NTY3OA$4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7NjbzhE",
			secret:  "correct horse battery staple",
		},
		{
			name:       "other cost, 12-byte salt, 16-byte key",
			encoded:    "$argon2id$v=19$m=64,t=3,p=2$c2FsdHNhbHRzYWx0$AVGFVCjFW1eSXIsDCqOyaw",
			secret:     "pässwörd",
			wantRehash: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ok, rehash, err := h.Verify(t.Context(), tt.encoded, tt.secret)
			if err != nil || !ok || rehash != tt.wantRehash {
				t.Errorf("Verify = (%v, %v, %v), want (true, %v, nil)", ok, rehash, err, tt.wantRehash)
			}
			ok, rehash, err = h.Verify(t.Context(), tt.encoded, tt.secret+"x")
			if err != nil || ok || rehash {
				t.Errorf("Verify(wrong secret) = (%v, %v, %v), want (false, false, nil)", ok, rehash, err)
			}
		})
	}
}

// The only test at the production cost (m=19456, t=2, p=1).
func TestHasherDefaultParams(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, HasherConfig{})
	ctx := t.Context()

	// Produced by: echo -n "Tr0ub4dor&3 ünïcödé" | argon2 0123456789abcdef -id -t 2 -k 19456 -p 1 -l 32
	const ref = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$ajM24oReWBgQDfsMK0Dsb7YAltWVPPalwcYJN+rjymU"
	ok, rehash, err := h.Verify(ctx, ref, "Tr0ub4dor&3 ünïcödé")
	if err != nil || !ok || rehash {
		t.Fatalf("Verify(reference) = (%v, %v, %v), want (true, false, nil)", ok, rehash, err)
	}

	encoded, err := h.Hash(ctx, "Tr0ub4dor&3")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; encoded[:len(want)] != want {
		t.Errorf("Hash = %q, want prefix %q", encoded, want)
	}
	if err := h.VerifyDummy(ctx); err != nil {
		t.Errorf("VerifyDummy: %v", err)
	}
}

func TestHasherNeedsRehash(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	old := newTestHasher(t, smallCost)
	encoded, err := old.Hash(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		cfg        HasherConfig
		wantRehash bool
	}{
		{"same parameters", smallCost, false},
		{"more memory", HasherConfig{Memory: 128, Time: 1, Threads: 1}, true},
		{"more passes", HasherConfig{Memory: 64, Time: 2, Threads: 1}, true},
		{"more threads", HasherConfig{Memory: 64, Time: 1, Threads: 2}, true},
		{"only concurrency differs", HasherConfig{Memory: 64, Time: 1, Threads: 1, MaxConcurrent: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHasher(t, tt.cfg)
			ok, rehash, err := h.Verify(ctx, encoded, "secret")
			if err != nil || !ok || rehash != tt.wantRehash {
				t.Errorf("Verify = (%v, %v, %v), want (true, %v, nil)", ok, rehash, err, tt.wantRehash)
			}
			// A failed login must not trigger a rehash, whatever the parameters.
			if _, rehash, _ := h.Verify(ctx, encoded, "wrong"); rehash {
				t.Error("Verify(wrong secret) asked for a rehash")
			}
		})
	}
}

func TestHasherVerifyMalformed(t *testing.T) {
	t.Parallel()
	const salt, key = "c29tZXNhbHQxMjM0NTY3OA", "4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7NjbzhE"

	tests := []struct{ name, encoded string }{
		{"empty", ""},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", "$argon2i$v=19$m=1024,t=2,p=1$" + salt + "$" + key},
		{"no version", "$argon2id$m=1024,t=2,p=1$" + salt + "$" + key},
		{"version 16", "$argon2id$v=16$m=1024,t=2,p=1$" + salt + "$" + key},
		{"params out of order", "$argon2id$v=19$t=2,m=1024,p=1$" + salt + "$" + key},
		{"missing param", "$argon2id$v=19$m=1024,t=2$" + salt + "$" + key},
		{"extra param", "$argon2id$v=19$m=1024,t=2,p=1,keyid=x$" + salt + "$" + key},
		{"leading zero", "$argon2id$v=19$m=01024,t=2,p=1$" + salt + "$" + key},
		{"plus sign", "$argon2id$v=19$m=+1024,t=2,p=1$" + salt + "$" + key},
		{"negative", "$argon2id$v=19$m=1024,t=-2,p=1$" + salt + "$" + key},
		{"t zero", "$argon2id$v=19$m=1024,t=0,p=1$" + salt + "$" + key},
		{"p zero", "$argon2id$v=19$m=1024,t=2,p=0$" + salt + "$" + key},
		{"p overflows uint8", "$argon2id$v=19$m=1024,t=2,p=256$" + salt + "$" + key},
		{"m overflows uint32", "$argon2id$v=19$m=4294967296,t=2,p=1$" + salt + "$" + key},
		{"m above the cap", "$argon2id$v=19$m=4194304,t=2,p=1$" + salt + "$" + key},
		{"m below 8p", "$argon2id$v=19$m=15,t=2,p=2$" + salt + "$" + key},
		{"t above the cap", "$argon2id$v=19$m=1024,t=1000,p=1$" + salt + "$" + key},
		{"padded salt", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "==$" + key},
		{"url alphabet", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + "4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7Njbz-_"},
		{"newline in key", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + key[:10] + "\n" + key[10:]},
		{"non-canonical trailing bits", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + key[:len(key)-1] + "F"},
		{"short salt", "$argon2id$v=19$m=1024,t=2,p=1$c2FsdA$" + key},
		{"short key", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$AAAAAAAAAAA"},
		{"empty key", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$"},
		{"trailing field", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + key + "$"},
		{"no leading dollar", "argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + key},
		{"trailing space", "$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + key + " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The parser itself must refuse it, not the cost bounds.
			if _, err := parsePHC(tt.encoded); !errors.Is(err, ErrMalformedHash) {
				t.Errorf("parsePHC(%q) error = %v, want ErrMalformedHash", tt.encoded, err)
			}
			wantMalformedAtDummyCost(t, HasherConfig{Memory: 1024, Time: 2, Threads: 1}, tt.encoded)
		})
	}
}

// wantMalformedAtDummyCost checks that Verify refuses encoded as a malformed
// hash after spending what VerifyDummy spends: one derivation at the
// configured cost, holding a slot. A hasher that answered at once would let
// a bad row be told apart by timing and escape the hashing bound.
func wantMalformedAtDummyCost(t *testing.T, cfg HasherConfig, encoded string) {
	t.Helper()
	h := newTestHasher(t, cfg)
	rec := recordOn(h)
	ok, rehash, err := h.Verify(t.Context(), encoded, "correct horse battery staple")
	if !errors.Is(err, ErrMalformedHash) || ok || rehash {
		t.Errorf("Verify(%q) = (%v, %v, %v), want (false, false, ErrMalformedHash)", encoded, ok, rehash, err)
	}
	if err := h.VerifyDummy(t.Context()); err != nil {
		t.Fatal(err)
	}
	calls := rec.derivations()
	if len(calls) != 2 {
		t.Fatalf("Verify(%q) and VerifyDummy made %d key derivations, want 1 each: %+v", encoded, len(calls), calls)
	}
	if calls[0] != calls[1] {
		t.Errorf("Verify(%q) derived %+v, VerifyDummy %+v: the costs differ", encoded, calls[0], calls[1])
	}
}

// Stored costs above the configured ones are refused beyond 4× (memory,
// memory × passes, threads); cheaper ones verify, so raising the cost, or
// lowering it up to 4×, locks nobody out.
func TestHasherVerifyCostBounds(t *testing.T) {
	t.Parallel()
	cfg := HasherConfig{Memory: 1024, Time: 2, Threads: 1} // bounds: m ≤ 4096, m·t ≤ 8192, p ≤ 4
	const salt, key = "c29tZXNhbHQxMjM0NTY3OA", "4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7NjbzhE"

	refused := []struct{ name, params string }{
		{"memory 1 GiB", "m=1048576,t=2,p=1"},
		{"memory just above 4×", "m=4097,t=1,p=1"},
		{"work above 4× with memory within", "m=2048,t=5,p=1"},
		{"work just above 4×", "m=4096,t=3,p=1"},
		{"threads above 4×", "m=1024,t=2,p=5"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantMalformedAtDummyCost(t, cfg, "$argon2id$v=19$"+tt.params+"$"+salt+"$"+key)
		})
	}

	accepted := []HasherConfig{
		{Memory: 4096, Time: 2, Threads: 1}, // memory and work at the bound
		{Memory: 2048, Time: 4, Threads: 1}, // work at the bound
		{Memory: 1024, Time: 2, Threads: 4}, // threads at the bound
		{Memory: 64, Time: 1, Threads: 1},   // far cheaper: the cost was raised since
		{Memory: 64, Time: 100, Threads: 1}, // many passes over little memory
	}
	h := newTestHasher(t, cfg)
	for _, old := range accepted {
		t.Run(fmt.Sprintf("m=%d,t=%d,p=%d", old.Memory, old.Time, old.Threads), func(t *testing.T) {
			t.Parallel()
			encoded, err := newTestHasher(t, old).Hash(t.Context(), "secret")
			if err != nil {
				t.Fatal(err)
			}
			ok, rehash, err := h.Verify(t.Context(), encoded, "secret")
			if err != nil || !ok || !rehash {
				t.Errorf("Verify(%q) = (%v, %v, %v), want (true, true, nil)", encoded, ok, rehash, err)
			}
		})
	}
}

// The row: m = 1 GiB against the production defaults must cost one
// ordinary verification, not a gigabyte.
func TestHasherVerifyRefusesGigabyteRow(t *testing.T) {
	t.Parallel()
	const row = "$argon2id$v=19$m=1048576,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$ajM24oReWBgQDfsMK0Dsb7YAltWVPPalwcYJN+rjymU"
	wantMalformedAtDummyCost(t, HasherConfig{}, row)
	h := newTestHasher(t, HasherConfig{})
	rec := recordOn(h)
	_, _, _ = h.Verify(t.Context(), row, "Tr0ub4dor&3 ünïcödé")
	if calls := rec.derivations(); len(calls) != 1 || calls[0] != dummyCost(HasherConfig{
		Memory: DefaultMemory, Time: DefaultTime, Threads: DefaultThreads,
	}) {
		t.Errorf("derivations %+v, want one at the default cost", calls)
	}
}

// The error of a malformed hash is meant for the operator's log, and a
// stored value may be anything, a password stored in clear included: no
// part of it may reach the message.
func TestHasherMalformedErrorHidesStoredText(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, HasherConfig{Memory: 1024, Time: 2, Threads: 1})
	recordOn(h)
	const mark = "Hunter2Secret"
	const salt, key = "c29tZXNhbHQxMjM0NTY3OA", "4KlJyBbEDXcoISiOzs6ivYpCydsHQ9k7s71f7NjbzhE"
	for _, encoded := range []string{
		mark,
		"$" + mark + "$v=19$m=1024,t=2,p=1$" + salt + "$" + key,
		"$argon2id$" + mark + "$m=1024,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$" + mark + "$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=2,p=1" + mark + "$" + salt + "$" + key,
		"$argon2id$v=19$m=1" + mark + ",t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=2,p=1$" + mark + "$" + key,
		"$argon2id$v=19$m=1024,t=2,p=1$" + salt + "$" + mark,
	} {
		_, _, err := h.Verify(t.Context(), encoded, "secret")
		if !errors.Is(err, ErrMalformedHash) {
			t.Errorf("Verify(%q) error = %v, want ErrMalformedHash", encoded, err)
		}
		if err != nil && strings.Contains(err.Error(), mark) {
			t.Errorf("Verify(%q) error %q repeats the stored text", encoded, err)
		}
	}
}

func TestNewHasherConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     HasherConfig
		wantErr bool
	}{
		{"zero value takes defaults", HasherConfig{}, false},
		{"small", smallCost, false},
		{"memory at the 8p floor", HasherConfig{Memory: 16, Threads: 2}, false},
		{"memory below 8p", HasherConfig{Memory: 15, Threads: 2}, true},
		{"memory above the cap", HasherConfig{Memory: maxMemoryKiB + 1}, true},
		{"time above the cap", HasherConfig{Time: maxTime + 1}, true},
		{"negative concurrency", HasherConfig{MaxConcurrent: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewHasher(tt.cfg)
			if tt.wantErr != (err != nil) {
				t.Fatalf("NewHasher(%+v) error = %v, want error: %v", tt.cfg, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestHasherMemoryBound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  HasherConfig
		want int64
	}{
		{HasherConfig{Memory: 1024, MaxConcurrent: 3}, 3 << 20},
		{HasherConfig{MaxConcurrent: 2}, 2 * 19 << 20},
		{HasherConfig{}, int64(runtime.GOMAXPROCS(0)) * 19 << 20},
	}
	for _, tt := range tests {
		if got := newTestHasher(t, tt.cfg).MemoryBound(); got != tt.want {
			t.Errorf("NewHasher(%+v).MemoryBound() = %d, want %d", tt.cfg, got, tt.want)
		}
	}
}

// recordingKey replaces argon2.IDKey: it records the cost it was asked for
// and blocks until release is closed, so a test can count hashes in flight.
type recordingKey struct {
	release  chan struct{}
	slots    chan struct{} // the hasher's, to see that a derivation holds one
	inFlight atomic.Int32
	maxSeen  atomic.Int32

	mu    sync.Mutex
	calls []derivation
}

// derivation is one call of the hasher's idKey.
type derivation struct {
	memory, time    uint32
	threads         uint8
	saltLen, keyLen int
	slotsHeld       int
}

// recordOn makes h derive through a new recorder that never blocks.
func recordOn(h *Hasher) *recordingKey {
	rec := &recordingKey{release: make(chan struct{}), slots: h.slots}
	close(rec.release)
	h.idKey = rec.idKey
	return rec
}

func (r *recordingKey) idKey(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for m := r.maxSeen.Load(); n > m && !r.maxSeen.CompareAndSwap(m, n); m = r.maxSeen.Load() {
	}
	d := derivation{memory: memory, time: time, threads: threads, saltLen: len(salt), keyLen: int(keyLen), slotsHeld: -1}
	if r.slots != nil {
		d.slotsHeld = len(r.slots)
	}
	r.mu.Lock()
	r.calls = append(r.calls, d)
	r.mu.Unlock()
	<-r.release
	return argon2.IDKey(password, salt, 1, 8, 1, keyLen) // cheap but real
}

func (r *recordingKey) derivations() []derivation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// dummyCost is the derivation VerifyDummy makes with cfg (defaults filled).
func dummyCost(cfg HasherConfig) derivation {
	return derivation{memory: cfg.Memory, time: cfg.Time, threads: cfg.Threads,
		saltLen: saltLen, keyLen: keyLen, slotsHeld: 1}
}

func TestHasherBoundsConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTestHasher(t, HasherConfig{MaxConcurrent: 2})
		rec := &recordingKey{release: make(chan struct{})}
		h.idKey = rec.idKey

		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if _, err := h.Hash(t.Context(), "secret"); err != nil {
					t.Errorf("Hash: %v", err)
				}
			})
		}
		synctest.Wait() // every goroutine is hashing or queued for a slot
		if got := rec.inFlight.Load(); got != 2 {
			t.Errorf("%d hashes in flight with MaxConcurrent 2", got)
		}
		close(rec.release)
		wg.Wait()
		if got := rec.maxSeen.Load(); got != 2 {
			t.Errorf("at most %d hashes ran at once, want 2", got)
		}
	})
}

func TestHasherWaitRespectsContext(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, HasherConfig{Memory: 64, Time: 1, MaxConcurrent: 1})
	encoded, err := h.Hash(t.Context(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	h.slots <- struct{}{} // the only slot is busy
	defer func() { <-h.slots }()

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Hash(ctx, "secret"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash error = %v, want context.Canceled", err)
	}
	if ok, _, err := h.Verify(ctx, encoded, "secret"); !errors.Is(err, context.Canceled) || ok {
		t.Errorf("Verify = (%v, %v), want (false, context.Canceled)", ok, err)
	}
	if err := h.VerifyDummy(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("VerifyDummy error = %v, want context.Canceled", err)
	}
	// A malformed hash waits like any other; the caller sees only the
	// cancellation, so the two errors never come together.
	if ok, _, err := h.Verify(ctx, "not a hash", "secret"); !errors.Is(err, context.Canceled) ||
		errors.Is(err, ErrMalformedHash) || ok {
		t.Errorf("Verify(malformed) = (%v, %v), want (false, context.Canceled alone)", ok, err)
	}
}

// VerifyDummy must cost what a real verification at the current parameters
// costs: same memory, passes, threads, salt and key size, holding a slot.
func TestHasherVerifyDummyCost(t *testing.T) {
	t.Parallel()
	cfg := HasherConfig{Memory: 256, Time: 3, Threads: 2}
	h := newTestHasher(t, cfg)
	rec := recordOn(h)

	encoded, err := h.Hash(t.Context(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Verify(t.Context(), encoded, "secret"); err != nil {
		t.Fatal(err)
	}
	if err := h.VerifyDummy(t.Context()); err != nil {
		t.Fatal(err)
	}
	calls := rec.derivations()
	if len(calls) != 3 {
		t.Fatalf("%d key derivations, want 3", len(calls))
	}
	verify, dummy := calls[1], calls[2]
	if dummy != verify {
		t.Errorf("dummy derivation %+v differs from a real one %+v", dummy, verify)
	}
	if want := dummyCost(cfg); verify != want {
		t.Errorf("derivation %+v, want the configured cost %+v", verify, want)
	}
}

func TestHasherCancelledContextWithFreeSlot(t *testing.T) {
	t.Parallel()
	h := newTestHasher(t, smallCost)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 20 { // select would pick the free slot about half the time
		if _, err := h.Hash(ctx, "secret"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Hash error = %v, want context.Canceled", err)
		}
	}
}

// The login's cost at the production parameters: go test -run '^$' -bench
// Verify ./internal/credential. "parallel" keeps every slot busy, as a
// login flood does; per op it is the bound's reciprocal.
func BenchmarkHasherVerify(b *testing.B) {
	h, err := NewHasher(HasherConfig{})
	if err != nil {
		b.Fatal(err)
	}
	encoded, err := h.Hash(b.Context(), "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	verify := func(b *testing.B) {
		// Error, not Fatal: RunParallel's goroutines may not stop the benchmark.
		if ok, _, err := h.Verify(b.Context(), encoded, "correct horse battery staple"); err != nil || !ok {
			b.Errorf("Verify = (%v, %v)", ok, err)
		}
	}
	b.Run("alone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			verify(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				verify(b)
			}
		})
	})
}
