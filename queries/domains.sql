-- name: CreateDomain :one
INSERT INTO domains (name, locale)
VALUES (@name, @locale)
RETURNING *;

-- name: GetDomainByName :one
SELECT * FROM domains WHERE name = @name;

