-- +goose Up

-- Bumped by every change of a user's secrets or status (a password or PIN
-- set, the account disabled or enabled). A login verifies a secret read
-- together with this number and may only start its session, clear the
-- failure count or mint a set-up token while the number is unchanged: a
-- credential replaced during the slow verification no longer opens anything.
ALTER TABLE users ADD COLUMN credential_version bigint NOT NULL DEFAULT 0;

-- When the last login attempt was admitted for verification. Failures count
-- towards the lock only within LOCKOUT_DURATION of each other, so a real and
-- an unknown login name (whose rows are swept after that long) lock alike.
ALTER TABLE users ADD COLUMN failed_login_at timestamptz;

-- Failed logins for login names that belong to no account, so that an
-- unknown name locks exactly like a real one and lockout does not tell who
-- exists. Keyed by the SHA-256 of the normalised name: whatever was typed
-- (an email, or a password in the wrong field) is never stored in clear.
-- Rows whose lock has expired are worthless and are swept.
CREATE TABLE unknown_login_failures (
    name_key     bytea PRIMARY KEY,
    failures     integer NOT NULL,
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX unknown_login_failures_updated_idx ON unknown_login_failures (updated_at);

-- +goose Down
DROP TABLE unknown_login_failures;
ALTER TABLE users DROP COLUMN failed_login_at, DROP COLUMN credential_version;
