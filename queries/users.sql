-- name: CreateUser :one
INSERT INTO users (
    domain_id, extension, login_name, email, first_name, last_name, locale,
    password_hash, password_changed_at, pin_hash, pin_changed_at
) VALUES (
    @domain_id, @extension, @login_name, @email, @first_name, @last_name, @locale,
    sqlc.narg(password_hash), CASE WHEN sqlc.narg(password_hash)::text IS NULL THEN NULL ELSE now() END,
    sqlc.narg(pin_hash), CASE WHEN sqlc.narg(pin_hash)::text IS NULL THEN NULL ELSE now() END
)
RETURNING *;

-- Keyset pagination on id keeps listing a large domain cheap.
-- name: ListUsers :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u
JOIN domains d ON d.id = u.domain_id
WHERE (sqlc.narg(domain_id)::uuid IS NULL OR u.domain_id = sqlc.narg(domain_id))
  AND (sqlc.narg(password_set)::boolean IS NULL OR (u.password_hash IS NOT NULL) = sqlc.narg(password_set))
  AND (sqlc.narg(after_id)::uuid IS NULL OR u.id > sqlc.narg(after_id))
ORDER BY u.id
LIMIT @max_rows;

-- name: GetUserByLoginName :one
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE lower(u.login_name) = lower(@login_name);

-- The accounts an identifier typed into "forgot password" names, by its
-- login name or its email: two rows are enough to call it ambiguous. One
-- round trip; each branch of the OR seeks its own index.
-- name: FindUsersByIdentifier :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE lower(u.login_name) = lower(@identifier) OR lower(u.email) = lower(@identifier)
LIMIT 2;

-- name: GetUserWithDomain :one
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = @id;

-- Every secret change bumps credential_version, so a login that verified the
-- old secret cannot start a session afterwards (CompleteLogin).
-- name: SetPasswordHash :exec
UPDATE users
SET password_hash = @password_hash, password_changed_at = @now::timestamptz, failed_logins = 0, locked_until = NULL,
    failed_login_at = NULL, credential_version = credential_version + 1, updated_at = @now::timestamptz
WHERE id = @id;

-- Rehashing after a parameter change must not count as a password change.
-- name: UpdatePasswordHash :exec
UPDATE users SET password_hash = @password_hash, updated_at = @now::timestamptz WHERE id = @id AND password_hash = @old_hash;

-- Finds the account of a login name and admits one login attempt on it to
-- the slow verification, in one round trip: the attempt counts as a failure
-- until CompleteLogin proves it right. The count restarts after an expired
-- lock or a quiet window (no attempt since @window_start); the attempt that
-- brings it to the threshold locks the account, and a locked account admits
-- nothing (admitted false, locked_until its lock as this statement saw it).
-- The row lock serialises concurrent attempts, so at most @threshold
-- verifications happen per lock, whatever the concurrency. The secrets and
-- credential_version are returned from the same row version. No row: no
-- account has this login name.
-- name: AdmitLoginAttempt :one
WITH u AS (
    SELECT users.id, users.domain_id, users.login_name, users.locked_until
    FROM users WHERE lower(users.login_name) = lower(@login_name)
), admitted AS (
    UPDATE users
    SET failed_logins = CASE WHEN users.failed_login_at IS NULL OR users.failed_login_at <= @window_start::timestamptz
                                  OR users.locked_until <= @now::timestamptz
                             THEN 1 ELSE users.failed_logins + 1 END,
        locked_until = CASE WHEN (CASE WHEN users.failed_login_at IS NULL OR users.failed_login_at <= @window_start::timestamptz
                                            OR users.locked_until <= @now::timestamptz
                                       THEN 1 ELSE users.failed_logins + 1 END) >= @threshold::integer
                            THEN @locked_until::timestamptz END,
        failed_login_at = @now::timestamptz
    FROM u
    WHERE users.id = u.id AND (users.locked_until IS NULL OR users.locked_until <= @now::timestamptz)
    RETURNING users.id, users.failed_logins, users.locked_until, users.credential_version, users.status,
              users.password_hash, users.pin_hash
)
SELECT u.id, u.domain_id, u.login_name, (a.id IS NOT NULL)::boolean AS admitted,
       coalesce(a.failed_logins, 0)::integer AS failed_logins, (a.locked_until IS NOT NULL)::boolean AS locks,
       coalesce(a.credential_version, 0)::bigint AS credential_version, coalesce(a.status, '')::text AS status,
       a.password_hash, a.pin_hash, u.locked_until
FROM u LEFT JOIN admitted a ON a.id = u.id;

-- Ends a verified login and starts its session, in one statement: it clears
-- the failure count and inserts the session and its audit event only while
-- the credential verified is still the current one and the account still
-- active. The row lock the UPDATE takes orders it against a concurrent
-- change, which bumps credential_version first and revokes sessions after:
-- either this waits, sees the bump and inserts nothing (no row), or the
-- change waits and then revokes the session this committed.
-- name: CompleteLogin :one
WITH ok AS (
    UPDATE users SET failed_logins = 0, locked_until = NULL, failed_login_at = NULL
    WHERE users.id = @id AND users.credential_version = @credential_version AND users.status = 'active'
    RETURNING users.id, users.domain_id
), session AS (
    INSERT INTO sessions (user_id, token_hash, created_at, expires_at, last_seen_at)
    SELECT ok.id, @token_hash, @now::timestamptz, @expires_at::timestamptz, @now::timestamptz FROM ok
    RETURNING sessions.id
), audited AS (
    INSERT INTO audit_events (kind, user_id, domain_id, actor_kind, actor_id, source_addr, request_id)
    SELECT @audit_kind, ok.id, ok.domain_id, @actor_kind, @actor_id, @source_addr, @request_id FROM ok
)
SELECT session.id FROM session;

-- AdmitLoginAttempt for a login name that belongs to no account, on
-- unknown_login_failures.
-- name: AdmitUnknownLoginAttempt :one
INSERT INTO unknown_login_failures AS f (name_key, failures, locked_until, updated_at)
VALUES (@name_key, 1, CASE WHEN 1 >= @threshold::integer THEN @locked_until::timestamptz END, @now::timestamptz)
ON CONFLICT (name_key) DO UPDATE
SET failures = CASE WHEN f.updated_at <= @window_start::timestamptz OR f.locked_until <= @now::timestamptz
                    THEN 1 ELSE f.failures + 1 END,
    locked_until = CASE WHEN (CASE WHEN f.updated_at <= @window_start::timestamptz OR f.locked_until <= @now::timestamptz
                                   THEN 1 ELSE f.failures + 1 END) >= @threshold::integer
                        THEN @locked_until::timestamptz END,
    updated_at = @now::timestamptz
WHERE f.locked_until IS NULL OR f.locked_until <= @now::timestamptz
RETURNING failures, locked_until;

-- name: GetUnknownLoginLockedUntil :one
SELECT locked_until FROM unknown_login_failures WHERE name_key = @name_key;

-- The lock that refused an attempt, read after it: AdmitLoginAttempt's own
-- read comes from before a concurrent attempt locked the account.
-- name: GetUserLockedUntil :one
SELECT locked_until FROM users WHERE id = @id;

-- Rows untouched for a whole window would restart their count anyway.
-- name: SweepUnknownLoginFailures :execrows
DELETE FROM unknown_login_failures WHERE updated_at <= @window_start::timestamptz;

-- Disabling or enabling changes what the account's credentials open, so it
-- bumps credential_version like a secret change.
-- name: SetUserStatus :one
UPDATE users SET status = @status, credential_version = credential_version + 1, updated_at = @now::timestamptz
WHERE id = @id AND status <> @status
RETURNING id;

-- Locks one user for a change of its credentials or status. Every such
-- change takes this lock (or updates the row) before it touches the user's
-- tokens or sessions: one order, so two changes cannot deadlock.
-- name: LockUser :one
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = @id
FOR NO KEY UPDATE OF u;

-- Whether login names of other domains are in a domain's namespace (ending in @name). Only
-- domain creation asks, so reading every user is acceptable.
-- name: LoginNamesInNamespace :one
SELECT EXISTS (SELECT 1 FROM users WHERE right(lower(login_name), char_length(@domain_name::text) + 1) = '@' || @domain_name::text
               AND domain_id NOT IN (SELECT id FROM domains WHERE name = @domain_name::text));

-- Whether an email belongs to a user of another domain than @domain_id.
-- name: EmailInOtherDomain :one
SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower(@email) AND domain_id <> @domain_id);

-- Locks a batch's users in id order, so concurrent batches cannot deadlock.
-- FOR NO KEY UPDATE, like LockUser: it serialises every change of these
-- users, but not the key-share locks that inserting a row which references
-- a user takes (a token, an audit event, a delivery); FOR UPDATE blocked
-- those, and the mailer's inserts, taking them in any order, deadlocked
-- with it.
-- name: LockUsersWithDomain :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = ANY(@ids::uuid[])
ORDER BY u.id
FOR NO KEY UPDATE OF u;

-- name: UnlockUsers :many
UPDATE users SET failed_logins = 0, locked_until = NULL, failed_login_at = NULL, updated_at = @now::timestamptz
WHERE id = ANY(@ids::uuid[]) AND locked_until IS NOT NULL
RETURNING id;

-- The fields an admin changes (PATCH /v1/admin/users/{id}). The caller holds
-- the user's row lock (LockUser) and passes every field, changed or not. Not
-- a secret change: credential_version stays, so sessions and logins in
-- flight are untouched.
-- name: UpdateUserProfile :one
UPDATE users
SET first_name = @first_name, last_name = @last_name, email = @email, locale = @locale, extension = @extension,
    updated_at = @now::timestamptz
WHERE id = @id
RETURNING *;
