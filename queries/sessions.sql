-- name: InsertSession :one
INSERT INTO sessions (user_id, token_hash, created_at, expires_at, last_seen_at)
VALUES (@user_id, @token_hash, @now, @expires_at, @now)
RETURNING id;

-- name: GetActiveSession :one
SELECT s.id, s.user_id, s.expires_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = @token_hash AND s.revoked_at IS NULL AND s.expires_at > @now AND u.status = 'active';

-- name: RevokeSessionByHash :execrows
UPDATE sessions SET revoked_at = @now::timestamptz WHERE token_hash = @token_hash AND revoked_at IS NULL;

-- A password change ends every other session of the user.
-- name: RevokeOtherSessions :exec
UPDATE sessions SET revoked_at = @now::timestamptz
WHERE user_id = @user_id AND revoked_at IS NULL AND (sqlc.narg(keep_id)::uuid IS NULL OR id <> sqlc.narg(keep_id));
