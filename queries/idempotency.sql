-- Takes a key for a request: a new key, a record older than the expiry
-- (which then starts afresh, with a new effect id), or one with the same
-- fingerprint, no answer and no live holder (released, or its holder
-- crashed). Returns the record's effect id; no row when the key is another
-- request's, answered, or held.
-- name: AcquireIdempotencyKey :one
INSERT INTO idempotency_keys AS k (key, effect_id, fingerprint, created_at, locked_until, holder)
VALUES (@key, @effect_id, @fingerprint, @now, @locked_until, @holder)
ON CONFLICT (key) DO UPDATE
SET effect_id    = CASE WHEN k.created_at <= @expired_before::timestamptz THEN EXCLUDED.effect_id ELSE k.effect_id END,
    created_at   = CASE WHEN k.created_at <= @expired_before::timestamptz THEN EXCLUDED.created_at ELSE k.created_at END,
    fingerprint  = EXCLUDED.fingerprint,
    locked_until = EXCLUDED.locked_until,
    holder       = EXCLUDED.holder,
    status       = NULL,
    answer       = NULL
WHERE k.created_at <= @expired_before::timestamptz
   OR (k.fingerprint = EXCLUDED.fingerprint AND k.status IS NULL
       AND (k.locked_until IS NULL OR k.locked_until <= EXCLUDED.created_at))
RETURNING k.effect_id;

-- name: GetIdempotencyKey :one
SELECT fingerprint, status, answer, locked_until FROM idempotency_keys
WHERE key = @key AND created_at > @expired_before::timestamptz;

-- Stores the answer, if the request still holds the key.
-- name: AnswerIdempotencyKey :execrows
UPDATE idempotency_keys SET status = @status, answer = @answer, locked_until = NULL, holder = NULL
WHERE key = @key AND holder = @holder;

-- Forgets a key whose request was refused (4xx): nothing was done.
-- name: ForgetIdempotencyKey :exec
DELETE FROM idempotency_keys WHERE key = @key AND holder = @holder;

-- Lets a retry take the key, keeping its effect id.
-- name: ReleaseIdempotencyKey :exec
UPDATE idempotency_keys SET locked_until = NULL, holder = NULL
WHERE key = @key AND holder = @holder;

-- Deletes up to 1,000 expired records, found by age; ARRAY() keeps the
-- planner from joining the batch against the whole table.
-- name: DeleteExpiredIdempotencyKeys :execrows
DELETE FROM idempotency_keys
WHERE key = ANY(ARRAY(SELECT key FROM idempotency_keys WHERE created_at <= @expired_before::timestamptz LIMIT 1000));
