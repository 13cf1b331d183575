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

-- Admits one login attempt to the slow verification, counting it as a failure
-- until CompleteLogin proves it right. The count restarts after an expired
-- lock or a quiet window (no attempt since @window_start); the attempt that
-- brings it to the threshold locks the account, and a locked account admits
-- nothing (no row). The row lock serialises concurrent attempts, so at most
-- @threshold verifications happen per lock, whatever the concurrency. The
-- secrets and credential_version are returned from the same row version.
-- name: AdmitLoginAttempt :one
UPDATE users
SET failed_logins = CASE WHEN failed_login_at IS NULL OR failed_login_at <= @window_start::timestamptz
                              OR locked_until <= @now::timestamptz
                         THEN 1 ELSE failed_logins + 1 END,
    locked_until = CASE WHEN (CASE WHEN failed_login_at IS NULL OR failed_login_at <= @window_start::timestamptz
                                        OR locked_until <= @now::timestamptz
                                   THEN 1 ELSE failed_logins + 1 END) >= @threshold::integer
                        THEN @locked_until::timestamptz END,
    failed_login_at = @now::timestamptz
WHERE id = @id AND (locked_until IS NULL OR locked_until <= @now::timestamptz)
RETURNING failed_logins, locked_until, credential_version, status, password_hash, pin_hash;

-- name: GetLockedUntil :one
SELECT locked_until FROM users WHERE id = @id;

-- Ends a verified login: clears the failure count only while the credential
-- verified is still the current one and the account still active. The row
-- lock it takes orders it against a concurrent change, which bumps
-- credential_version first and revokes sessions after: either this sees the
-- bump and matches nothing, or the change sees the session it commits.
-- name: CompleteLogin :execrows
UPDATE users SET failed_logins = 0, locked_until = NULL, failed_login_at = NULL
WHERE id = @id AND credential_version = @credential_version AND status = 'active';

-- The unknown-login-name twin of AdmitLoginAttempt, on unknown_login_failures.
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

-- Whether login names in a domain's namespace (ending in @name) exist. Only
-- domain creation asks, so reading every user is acceptable.
-- name: LoginNamesInNamespace :one
SELECT EXISTS (SELECT 1 FROM users WHERE right(lower(login_name), char_length(@domain_name::text) + 1) = '@' || @domain_name::text);

-- Whether an email belongs to a user of another domain than @domain_id.
-- name: EmailInOtherDomain :one
SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower(@email) AND domain_id <> @domain_id);

-- Locks a batch's users in id order, so concurrent batches cannot deadlock.
-- name: LockUsersWithDomain :many
SELECT sqlc.embed(u), d.name AS domain_name
FROM users u JOIN domains d ON d.id = u.domain_id
WHERE u.id = ANY(@ids::uuid[])
ORDER BY u.id
FOR UPDATE OF u;

-- name: UnlockUsers :many
UPDATE users SET failed_logins = 0, locked_until = NULL, failed_login_at = NULL, updated_at = @now::timestamptz
WHERE id = ANY(@ids::uuid[]) AND locked_until IS NOT NULL
RETURNING id;
