-- Takes events for a batch of distinct keys by the generic cell rate
-- algorithm, in one statement: key i asks for counts[i] events at one per
-- intervals_us[i] microseconds, up to bursts_us[i] ahead of now. Of a key's
-- events, as many are allowed as fit: the j-th (from 0) fits when
-- max(TAT, now) + j × interval ≤ now + burst; the TAT then moves to
-- max(TAT, now) + allowed × interval, a new key starting from now. The
-- allowance check uses now moved on by the time this statement waited for
-- the key's row lock, so a batch that queued behind another on a busy key is
-- judged when it gets its turn (the new TAT still starts from the given now,
-- so TATs advance by exact intervals). Rows are written in key order, the
-- one lock order of every batch in every process: batches cannot deadlock.
-- Returns each key's new TAT and how many of its events were allowed.
-- name: TakeRateLimits :many
WITH req AS (
    SELECT unnest(sqlc.arg(keys)::bytea[]) AS key, unnest(sqlc.arg(counts)::integer[]) AS n,
           unnest(sqlc.arg(intervals_us)::bigint[]) AS interval_us, unnest(sqlc.arg(bursts_us)::bigint[]) AS burst_us
)
INSERT INTO rate_limits AS rl (key, tat, taken)
SELECT req.key,
       sqlc.arg(now)::timestamptz + least(req.n, req.burst_us / req.interval_us + 1) * req.interval_us * interval '1 microsecond',
       least(req.n, req.burst_us / req.interval_us + 1)
FROM req
ORDER BY req.key
ON CONFLICT (key) DO UPDATE
SET taken = (SELECT least(q.n, greatest(0, floor(extract(epoch FROM
                 sqlc.arg(now)::timestamptz + (clock_timestamp() - statement_timestamp())
                 + q.burst_us * interval '1 microsecond' - greatest(rl.tat, sqlc.arg(now)::timestamptz)) * 1000000 / q.interval_us) + 1))
             FROM req q WHERE q.key = rl.key),
    tat = greatest(rl.tat, sqlc.arg(now)::timestamptz)
          + (SELECT least(q.n, greatest(0, floor(extract(epoch FROM
                 sqlc.arg(now)::timestamptz + (clock_timestamp() - statement_timestamp())
                 + q.burst_us * interval '1 microsecond' - greatest(rl.tat, sqlc.arg(now)::timestamptz)) * 1000000 / q.interval_us) + 1))
                 * q.interval_us
             FROM req q WHERE q.key = rl.key) * interval '1 microsecond'
RETURNING rl.key, rl.tat, rl.taken;

-- Deletes the keys of one key range whose allowance has fully recovered (TAT
-- not after now): such a key behaves exactly like an absent one. The sweep
-- walks the key space range by range, so that no statement holds many row
-- locks for long and each one seeks by the primary key.
-- name: DeleteRecoveredRateLimits :execrows
DELETE FROM rate_limits
WHERE key >= sqlc.arg(from_key)::bytea AND key < sqlc.arg(below_key)::bytea AND tat <= sqlc.arg(now)::timestamptz;
