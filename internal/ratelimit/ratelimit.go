// Package ratelimit allows N events per window per key with the generic cell
// rate algorithm (GCRA), keeping one timestamp per key in PostgreSQL so that
// every ingress process enforces the same limit: a limiter per process would
// multiply it by the number of processes.
//
// Nothing is kept in the process, and the table holds a key only while its
// allowance has not fully recovered (at most one window after its last
// allowed event, plus one sweep period), so a flood of distinct keys grows
// the table by its own allowed events and never makes a new client refused.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"time"

	"github.com/latchkey/latchkey/internal/coalesce"
	"github.com/latchkey/latchkey/internal/store"
)

// Store keeps the limiters' state; *store.Store implements it.
type Store interface {
	// TakeRateLimits takes the events of a batch of distinct keys in one
	// statement, reading now as late as it can; see
	// store.Store.TakeRateLimits.
	TakeRateLimits(ctx context.Context, now func() time.Time, takes []store.RateTake) ([]store.RateTaken, error)
	// DeleteRecoveredRateLimits deletes the keys whose allowance has fully
	// recovered by now.
	DeleteRecoveredRateLimits(ctx context.Context, now time.Time) (int64, error)
}

// Limiter limits events per key. Limiters with different names never share
// a key, though they share the store.
//
// Every event is a write to PostgreSQL, so a limiter coalesces the events
// that arrive while its statement is in flight into its next statement
// (internal/coalesce): one round trip decides them all, the events of one
// key as a count. Under load a request waits for at most the statement
// before its own, and the cost per request falls as the load rises.
type Limiter struct {
	store    Store
	name     string
	interval time.Duration // between events at the sustained rate
	burst    time.Duration // how far ahead of now a key's TAT may run
	now      func() time.Time
	batcher  *coalesce.Batcher[[]byte, Decision]
}

// maxBatch bounds the events of one statement (its arrays and its locks);
// statementTimeout bounds one statement for the callers it decides.
const (
	maxBatch         = 512
	statementTimeout = 10 * time.Second
)

// New allows count events per window for each key, in a burst or spread
// out. name separates this limiter's keys from other limiters' in the store.
// now is the clock (time.Now when nil); the TAT is computed from it, so
// processes sharing a store need synchronised clocks (NTP).
func New(st Store, name string, count int, window time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	interval := window / time.Duration(count)
	l := &Limiter{store: st, name: name, interval: interval, burst: window - interval, now: now}
	l.batcher = coalesce.New(maxBatch, statementTimeout, l.decide)
	return l
}

// Decision is the outcome of Allow.
type Decision struct {
	Allowed bool
	// RetryAfter is, when refused, how long until the next event would be
	// allowed; zero when allowed.
	RetryAfter time.Duration
}

// Allow takes one event for key. An error is the store's (store.ErrUnavailable
// when PostgreSQL cannot be reached) or ctx's; the caller must not treat it
// as allowed. An event whose caller gave up may still be counted.
func (l *Limiter) Allow(ctx context.Context, key string) (Decision, error) {
	return l.batcher.Do(ctx, l.digest(key))
}

// decide takes a batch's events in one statement, the events of one key as
// a count, and answers each: the first ones of a key allowed, as many as the
// limit lets through.
func (l *Limiter) decide(ctx context.Context, keys [][]byte) ([]Decision, error) {
	slot := map[string]int{}
	var takes []store.RateTake
	for _, k := range keys {
		i, ok := slot[string(k)]
		if !ok {
			i = len(takes)
			slot[string(k)] = i
			takes = append(takes, store.RateTake{Key: k, Interval: l.interval, Burst: l.burst})
		}
		takes[i].Count++
	}
	taken, err := l.store.TakeRateLimits(ctx, l.now, takes)
	if err != nil {
		return nil, fmt.Errorf("rate limit %s: %w", l.name, err)
	}
	out := make([]Decision, len(keys))
	for i, k := range keys {
		t := &taken[slot[string(k)]]
		if t.Allowed > 0 {
			t.Allowed--
			out[i] = Decision{Allowed: true}
		} else {
			out[i] = Decision{RetryAfter: t.RetryAfter}
		}
	}
	return out, nil
}

// digest hashes the limiter's name and the key, so what clients typed (an
// email, or a password in the wrong field) is never stored in clear, and
// every key has the same size.
func (l *Limiter) digest(key string) []byte {
	h := sha256.New()
	h.Write([]byte(l.name))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum(nil)
}

// AddressKey is the rate-limit key of a client address: an IPv4 address
// (IPv4-mapped IPv6 included) counts alone, an IPv6 address by its /64, the
// smallest block a site is normally given (RFC 6177), so a client cannot
// escape its limit by rotating through the 2^64 addresses it holds. The
// result is the prefix in CIDR form, e.g. 192.0.2.7/32 or 2001:db8:1:2::/64;
// an invalid address gives "invalid".
func AddressKey(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits) // bits is within the address's length
	return p.String()
}
