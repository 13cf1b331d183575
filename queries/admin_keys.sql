-- name: CreateAdminKey :one
INSERT INTO admin_keys (name, domain_id, key_hash)
VALUES (@name, sqlc.narg(domain_id), @key_hash)
RETURNING id, name, domain_id, created_at;

-- name: GetAdminKeyByHash :one
SELECT k.id, k.name, k.domain_id, k.revoked_at
FROM admin_keys k
WHERE k.key_hash = @key_hash;
