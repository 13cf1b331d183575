package store

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/latchkey/latchkey/internal/store/dbsqlc"
)

// IdempotencyClaim asks for an Idempotency-Key record on behalf of one
// request. Key and Fingerprint are digests (see schema/00006); Holder
// identifies the request, so that only it can answer or release the key.
type IdempotencyClaim struct {
	Key         []byte
	Fingerprint []byte
	Holder      uuid.UUID
	// Lease is how long the request holds the key before another may take
	// it over (the holder is presumed dead); TTL is how long a record
	// lasts from its first request.
	Lease, TTL time.Duration
}

// IdempotencyState is what a claim found. Exactly one of its parts is set:
// Acquired (the request may run; its events are to be derived from
// EffectID; Fresh when no earlier request ran under the record), Reused
// (the key belongs to another request), Answered (the stored Status and
// sealed Answer), or InProgress (another request holds the key now).
type IdempotencyState struct {
	Acquired   bool
	EffectID   uuid.UUID
	Fresh      bool
	Reused     bool
	Answered   bool
	Status     int
	Answer     []byte
	InProgress bool
}

// ClaimIdempotencyKey takes the key for the request, or says who has it.
// A key whose record is older than TTL counts as new; one whose holder's
// lease has passed without an answer is taken over with its effect id, as
// is one released by a request that failed in a way worth retrying.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, c IdempotencyClaim, now time.Time) (IdempotencyState, error) {
	lockedUntil := now.Add(c.Lease)
	expired := now.Add(-c.TTL)
	// A record can vanish (swept, or expired) between the two statements;
	// the next round then inserts it afresh.
	for range 3 {
		fresh := uuid.New()
		id, err := s.q.AcquireIdempotencyKey(ctx, s.pool, dbsqlc.AcquireIdempotencyKeyParams{
			Key: c.Key, EffectID: fresh, Fingerprint: c.Fingerprint, Now: now,
			LockedUntil: &lockedUntil, Holder: &c.Holder, ExpiredBefore: expired,
		})
		if err == nil {
			// The record keeps an earlier request's effect id unless it is
			// new (inserted, or started afresh after the TTL).
			return IdempotencyState{Acquired: true, EffectID: id, Fresh: id == fresh}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return IdempotencyState{}, translate("claim idempotency key", err)
		}
		row, err := s.q.GetIdempotencyKey(ctx, s.pool, dbsqlc.GetIdempotencyKeyParams{Key: c.Key, ExpiredBefore: expired})
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return IdempotencyState{}, translate("read idempotency key", err)
		}
		switch {
		case subtle.ConstantTimeCompare(row.Fingerprint, c.Fingerprint) != 1:
			return IdempotencyState{Reused: true}, nil
		case row.Status != nil:
			return IdempotencyState{Answered: true, Status: int(*row.Status), Answer: row.Answer}, nil
		case row.LockedUntil != nil && row.LockedUntil.After(now):
			return IdempotencyState{InProgress: true}, nil
		}
		// Released or lapsed since the first statement looked: try again.
	}
	return IdempotencyState{}, fmt.Errorf("claim idempotency key: the record kept changing")
}

// AnswerIdempotencyKey stores the request's answer (sealed by the caller)
// and ends its hold. It reports false when the request no longer held the
// key: its lease had passed and another request took the key over.
func (s *Store) AnswerIdempotencyKey(ctx context.Context, key []byte, holder uuid.UUID, status int, answer []byte) (bool, error) {
	st := int16(status)
	n, err := s.q.AnswerIdempotencyKey(ctx, s.pool, dbsqlc.AnswerIdempotencyKeyParams{
		Key: key, Holder: &holder, Status: &st, Answer: answer,
	})
	if err != nil {
		return false, translate("answer idempotency key", err)
	}
	return n == 1, nil
}

// ForgetIdempotencyKey deletes the record of a request that did nothing
// (refused with a 4xx), if the request still holds it: the key may be used
// again, and a flood of refused requests leaves nothing behind. Only for a
// Fresh claim: a record an earlier try ran under may carry its effect.
func (s *Store) ForgetIdempotencyKey(ctx context.Context, key []byte, holder uuid.UUID) error {
	return translate("forget idempotency key", s.q.ForgetIdempotencyKey(ctx, s.pool, dbsqlc.ForgetIdempotencyKeyParams{
		Key: key, Holder: &holder,
	}))
}

// ReleaseIdempotencyKey ends the request's hold without an answer, so that
// a retry runs the request again under the same effect id.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, key []byte, holder uuid.UUID) error {
	return translate("release idempotency key", s.q.ReleaseIdempotencyKey(ctx, s.pool, dbsqlc.ReleaseIdempotencyKeyParams{
		Key: key, Holder: &holder,
	}))
}

// DeleteExpiredIdempotencyKeys deletes the records created at or before
// expiredBefore, a thousand rows per statement, and returns how many.
func (s *Store) DeleteExpiredIdempotencyKeys(ctx context.Context, expiredBefore time.Time) (int64, error) {
	var total int64
	for {
		n, err := s.q.DeleteExpiredIdempotencyKeys(ctx, s.pool, expiredBefore)
		total += n
		if err != nil {
			return total, translate("delete expired idempotency keys", err)
		}
		if n < 1000 {
			return total, nil
		}
	}
}
