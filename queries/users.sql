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

-- Two rows are enough to tell "one" from "ambiguous".
-- name: FindUsersByEmail :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE lower(u.email) = lower(@email)
ORDER BY u.created_at
LIMIT 2;

-- name: GetUserWithDomain :one
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = @id;

-- name: SetPasswordHash :exec
UPDATE users
SET password_hash = @password_hash, password_changed_at = @now::timestamptz, failed_logins = 0, locked_until = NULL,
    updated_at = @now::timestamptz
WHERE id = @id;

-- Rehashing after a parameter change must not count as a password change.
-- name: UpdatePasswordHash :exec
UPDATE users SET password_hash = @password_hash, updated_at = @now::timestamptz WHERE id = @id AND password_hash = @old_hash;

-- A failure after an expired lock starts a new count, so one wrong guess
-- does not re-lock the account; just_locked is true for the failure that
-- locks it, once per lock.
-- name: RecordLoginFailure :one
WITH prev AS (
    SELECT users.id AS user_id,
           CASE WHEN users.locked_until IS NOT NULL AND users.locked_until <= @now::timestamptz THEN 0 ELSE users.failed_logins END AS failures
    FROM users WHERE users.id = @id FOR UPDATE
)
UPDATE users u
SET failed_logins = prev.failures + 1,
    locked_until = CASE WHEN prev.failures + 1 >= @threshold::integer THEN @locked_until::timestamptz
                        WHEN u.locked_until <= @now::timestamptz THEN NULL
                        ELSE u.locked_until END,
    updated_at = @now::timestamptz
FROM prev
WHERE u.id = prev.user_id
RETURNING u.failed_logins, u.locked_until, (prev.failures + 1 = @threshold::integer) AS just_locked;

-- name: RecordLoginSuccess :exec
UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = @id AND (failed_logins <> 0 OR locked_until IS NOT NULL);


-- Locks a batch's users in id order, so concurrent batches cannot deadlock.
-- name: LockUsersWithDomain :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = ANY(@ids::uuid[])
ORDER BY u.id
FOR UPDATE OF u;

-- name: UnlockUsers :many
UPDATE users SET failed_logins = 0, locked_until = NULL, updated_at = @now::timestamptz
WHERE id = ANY(@ids::uuid[]) AND locked_until IS NOT NULL
RETURNING id;
