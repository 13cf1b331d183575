-- name: InsertAuditEvent :exec
INSERT INTO audit_events (kind, user_id, domain_id, actor_kind, actor_id, source_addr, request_id, detail)
VALUES (@kind, sqlc.narg(user_id), sqlc.narg(domain_id), @actor_kind, @actor_id, @source_addr, @request_id, @detail);
