-- +goose Up

-- Rate-limit state shared by every ingress process: one row per key, holding
-- the generic cell rate algorithm's theoretical arrival time (TAT). The key is
-- the SHA-256 of the limiter's name and the client's key, so the identifiers
-- people type (emails, and sometimes a password in the wrong field) are never
-- stored in clear.
--
-- UNLOGGED: no WAL for a row written by nearly every login and recovery
-- request. A crash or a failover to a replica empties the table; that only
-- forgives, every client starting again with its full allowance, which is
-- acceptable for throttling (the per-account email limit the tokens worker
-- applies lives in logged tables).
--
-- fillfactor 70: every request rewrites its key's row; the free space lets
-- PostgreSQL keep the new version on the same page (a HOT update, no index
-- entry), as tat is not indexed.
-- taken is how many events the last statement for the key allowed: events
-- that arrive together are taken for a key in one statement (see
-- queries/ratelimits.sql), and the statement returns the count with the TAT.
CREATE UNLOGGED TABLE rate_limits (
    key   bytea PRIMARY KEY,
    tat   timestamptz NOT NULL,
    taken integer NOT NULL DEFAULT 0
) WITH (fillfactor = 70);

-- +goose Down
DROP TABLE rate_limits;
