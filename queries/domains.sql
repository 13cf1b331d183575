-- name: CreateDomain :one
INSERT INTO domains (name, locale)
VALUES (@name, @locale)
RETURNING *;

-- name: GetDomainByName :one
SELECT * FROM domains WHERE name = @name;


-- name: GetDomain :one
SELECT * FROM domains WHERE id = @id;

-- Keyset pagination on id, like ListUsers; only_id confines a key limited
-- to one domain to that domain.
-- name: ListDomains :many
SELECT * FROM domains
WHERE (sqlc.narg(only_id)::uuid IS NULL OR id = sqlc.narg(only_id))
  AND (sqlc.narg(after_id)::uuid IS NULL OR id > sqlc.narg(after_id))
ORDER BY id
LIMIT @max_rows;
