-- Takes one event for a key by the generic cell rate algorithm: allowed when
-- the key's TAT is at most now + burst; an allowed event moves the TAT to
-- max(TAT, now) + interval, a new key starting from now. A TAT only grows
-- (the sweep deletes only TATs already past), so a refusal read from the
-- snapshot stands: it is answered without locking or writing the row, and a
-- flood refused for one key costs index lookups, not a queue on its row lock.
-- Otherwise the upsert locks the row and checks again, with now moved on by
-- the time this statement waited for the lock: a request that queued behind
-- others on a busy key is judged when it gets its turn, not refused for
-- arriving "in the past" of the TAT those others advanced. (The new TAT
-- still starts from the given now, so that TATs advance by exact intervals;
-- judging later only admits what the limit allows at the later time.) The TAT returned
-- on refusal gives the caller Retry-After; when the key was inserted by a
-- concurrent transaction after this statement's snapshot (its TAT not
-- visible), the TAT returned makes Retry-After one interval. (sqlc.arg
-- rather than @name: sqlc garbles @interval_us here.)
-- name: TakeRateLimit :one
WITH seen AS (
    SELECT r.tat FROM rate_limits r WHERE r.key = sqlc.arg(key)::bytea
), taken AS (
    INSERT INTO rate_limits AS rl (key, tat)
    SELECT sqlc.arg(key)::bytea, sqlc.arg(now)::timestamptz + sqlc.arg(interval_us)::bigint * '1 microsecond'::interval
    WHERE NOT EXISTS (
        SELECT FROM seen c WHERE c.tat > sqlc.arg(now)::timestamptz + sqlc.arg(burst_us)::bigint * '1 microsecond'::interval)
    ON CONFLICT (key) DO UPDATE
    SET tat = greatest(rl.tat, sqlc.arg(now)::timestamptz) + sqlc.arg(interval_us)::bigint * '1 microsecond'::interval
    WHERE rl.tat <= sqlc.arg(now)::timestamptz + (clock_timestamp() - statement_timestamp())
                    + sqlc.arg(burst_us)::bigint * '1 microsecond'::interval
    RETURNING rl.tat
)
SELECT (t.tat IS NOT NULL)::boolean AS allowed,
       (coalesce(t.tat, (SELECT c.tat FROM seen c),
                 sqlc.arg(now)::timestamptz + (sqlc.arg(burst_us)::bigint + sqlc.arg(interval_us)::bigint) * '1 microsecond'::interval)
       )::timestamptz AS tat
FROM (SELECT 1) AS one LEFT JOIN taken t ON true;

-- Deletes the keys of one key range whose allowance has fully recovered (TAT
-- not after now): such a key behaves exactly like an absent one. The sweep
-- walks the key space range by range, so that no statement holds many row
-- locks for long and each one seeks by the primary key.
-- name: DeleteRecoveredRateLimits :execrows
DELETE FROM rate_limits
WHERE key >= sqlc.arg(from_key)::bytea AND key < sqlc.arg(below_key)::bytea AND tat <= sqlc.arg(now)::timestamptz;
