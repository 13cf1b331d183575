-- The nil UUID stands for "none" in the arrays, which cannot hold NULLs.
-- name: InsertAuditEvents :exec
INSERT INTO audit_events (kind, user_id, domain_id, actor_kind, actor_id, source_addr, request_id, detail)
SELECT x.kind, NULLIF(x.user_id, '00000000-0000-0000-0000-000000000000'::uuid),
       NULLIF(x.domain_id, '00000000-0000-0000-0000-000000000000'::uuid),
       x.actor_kind, x.actor_id, x.source_addr, x.request_id, x.detail::jsonb
FROM (
    SELECT unnest(@kinds::text[]) AS kind, unnest(@user_ids::uuid[]) AS user_id, unnest(@domain_ids::uuid[]) AS domain_id,
           unnest(@actor_kinds::text[]) AS actor_kind, unnest(@actor_ids::text[]) AS actor_id,
           unnest(@source_addrs::text[]) AS source_addr, unnest(@request_ids::text[]) AS request_id,
           unnest(@details::text[]) AS detail
) x;
