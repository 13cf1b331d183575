package store

import (
	"bytes"
	"context"
	"time"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// RateTake asks for Count events of one key (an opaque digest, at most 32
// bytes) under a generic cell rate limit: one event per Interval, up to
// Burst ahead of now (Burst = window - Interval).
type RateTake struct {
	Key      []byte
	Count    int
	Interval time.Duration
	Burst    time.Duration
}

// RateTaken is what TakeRateLimits did for one key: how many of its events
// it allowed (the first ones asked), and when refused ones may come back.
type RateTaken struct {
	Allowed    int
	RetryAfter time.Duration // when Allowed < Count: until the next event fits
}

// TakeRateLimits takes the events of a batch of distinct keys in one
// statement and returns, in the order asked, what it did for each. Durations
// are rounded up to whole microseconds, PostgreSQL's resolution.
//
// now is read once a connection is in hand, and the statement adds the time
// it waited for each key's row lock: a request is judged by when its turn
// came, not by when it joined the queue (under a flood of one key, a queue
// longer than the burst would otherwise refuse requests the limit allows).
func (s *Store) TakeRateLimits(ctx context.Context, now func() time.Time, takes []RateTake) ([]RateTaken, error) {
	p := dbsqlc.TakeRateLimitsParams{
		Keys: make([][]byte, len(takes)), Counts: make([]int32, len(takes)),
		IntervalsUs: make([]int64, len(takes)), BurstsUs: make([]int64, len(takes)),
	}
	index := make(map[string]int, len(takes))
	for i, t := range takes {
		p.Keys[i], p.Counts[i] = t.Key, int32(t.Count)
		p.IntervalsUs[i], p.BurstsUs[i] = ceilMicros(t.Interval), ceilMicros(t.Burst)
		index[string(t.Key)] = i
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, translate("take rate limits", err)
	}
	defer conn.Release()
	p.Now = now()
	rows, err := s.q.TakeRateLimits(ctx, conn, p)
	if err != nil {
		return nil, translate("take rate limits", err)
	}
	out := make([]RateTaken, len(takes))
	for _, row := range rows {
		i, ok := index[string(row.Key)]
		if !ok {
			continue
		}
		t := takes[i]
		out[i].Allowed = int(row.Taken)
		if out[i].Allowed < t.Count {
			// The next event fits once the TAT is within the burst again;
			// a refusal never advertises "retry at once".
			if out[i].RetryAfter = row.Tat.Sub(p.Now) - t.Burst; out[i].RetryAfter <= 0 {
				out[i].RetryAfter = t.Interval
			}
		}
	}
	return out, nil
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
