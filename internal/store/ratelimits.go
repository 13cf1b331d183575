package store

import (
	"bytes"
	"context"
	"time"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// TakeRateLimit takes one event for key (an opaque digest, at most 32 bytes)
// under a generic cell rate limit: one event per interval, up to burst ahead
// of now (burst = window - interval). It reports whether the event is
// allowed and, when refused, how long until the next one would be (from the
// key's stored theoretical arrival time). Durations are rounded up to whole
// microseconds, PostgreSQL's resolution.
//
// now is read once a connection is in hand, and the statement adds the time
// it waited for the key's row lock: a request is judged by when its turn
// came, not by when it joined the queue (under a flood of one key, a queue
// longer than burst would otherwise refuse requests the limit allows).
func (s *Store) TakeRateLimit(ctx context.Context, key []byte, now func() time.Time, interval, burst time.Duration) (allowed bool, retryAfter time.Duration, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, 0, translate("take rate limit", err)
	}
	defer conn.Release()
	at := now()
	row, err := s.q.TakeRateLimit(ctx, conn, dbsqlc.TakeRateLimitParams{
		Key: key, Now: at, IntervalUs: ceilMicros(interval), BurstUs: ceilMicros(burst),
	})
	if err != nil {
		return false, 0, translate("take rate limit", err)
	}
	if row.Allowed {
		return true, 0, nil
	}
	wait := row.Tat.Sub(at) - burst
	if wait <= 0 {
		// Cannot happen when the statement decided on at; a refusal must
		// never advertise "retry at once".
		wait = interval
	}
	return false, wait, nil
}

// DeleteRecoveredRateLimits deletes every key whose allowance has fully
// recovered by now (its state is then the same as a key never seen) and
// returns how many. It walks the key space in 256 ranges by the first byte,
// one short statement each, so that requests for keys in the range wait at
// most for one range's delete.
func (s *Store) DeleteRecoveredRateLimits(ctx context.Context, now time.Time) (int64, error) {
	// Above every key: keys are at most 32 bytes, and a longer run of 0xff
	// sorts after any shorter one.
	top := bytes.Repeat([]byte{0xff}, 33)
	var total int64
	for i := range 256 {
		below := top
		if i < 255 {
			below = []byte{byte(i + 1)}
		}
		n, err := s.q.DeleteRecoveredRateLimits(ctx, s.pool, dbsqlc.DeleteRecoveredRateLimitsParams{
			FromKey: []byte{byte(i)}, BelowKey: below, Now: now,
		})
		if err != nil {
			return total, translate("delete recovered rate limits", err)
		}
		total += n
	}
	return total, nil
}

func ceilMicros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}
