-- +goose Up

-- Idempotency-Key records of the ingress (SPEC §5.9): one row per key a
-- caller sent to a route, for 24 hours from its first request. A retry with
-- the same key and request gets the stored answer (successes only); while
-- the first request runs, the row is held (locked_until). A request whose
-- outcome is unknown or that is to be retried (5xx, 429) releases it without
-- an answer, keeping effect_id, so that the retry publishes its events under
-- the same ids; a refused one (4xx) did nothing, and its row is deleted.
--
-- Nothing a client sent is stored in clear: key is the SHA-256 of the
-- caller's scope (admin key id or client address), the route and the
-- client's key; fingerprint is derived from the client's key and the whole
-- request (HKDF-SHA-256); answer is the status, headers and body sealed
-- (AES-256-GCM) under another key derived from the same, so the database
-- alone cannot read an answer (a reset's session token, say).
CREATE TABLE idempotency_keys (
    key          bytea PRIMARY KEY,
    effect_id    uuid NOT NULL,
    fingerprint  bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    -- While a request holds the key: until when, and which request. A
    -- holder that crashed is taken over once locked_until has passed.
    locked_until timestamptz,
    holder       uuid,
    status       smallint,
    answer       bytea,
    CONSTRAINT idempotency_keys_answered CHECK ((status IS NULL) = (answer IS NULL))
);
-- For the sweep of records older than 24 hours.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
