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

-- name: GetUserByID :one
SELECT * FROM users WHERE id = @id;

-- Keyset pagination on id keeps listing a large domain cheap.
-- name: ListUsers :many
SELECT u.*, d.name AS domain_name
FROM users u
JOIN domains d ON d.id = u.domain_id
WHERE (sqlc.narg(domain_id)::uuid IS NULL OR u.domain_id = sqlc.narg(domain_id))
  AND (sqlc.narg(password_set)::boolean IS NULL OR (u.password_hash IS NOT NULL) = sqlc.narg(password_set))
  AND (sqlc.narg(after_id)::uuid IS NULL OR u.id > sqlc.narg(after_id))
ORDER BY u.id
LIMIT @max_rows;
