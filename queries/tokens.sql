-- Only the newest token of a user and purpose is valid.
-- name: RevokeLiveTokens :exec
UPDATE tokens SET revoked_at = @now::timestamptz
WHERE user_id = @user_id AND purpose = ANY(@purposes::text[]) AND consumed_at IS NULL AND revoked_at IS NULL;

-- name: GetLiveToken :one
SELECT t.id, t.user_id, t.purpose, t.expires_at, u.login_name
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = @token_hash AND t.purpose = ANY(@purposes::text[])
  AND t.consumed_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > @now AND u.status = 'active';

-- The row lock taken by this UPDATE makes concurrent consumers of one token
-- queue; the re-checked WHERE lets exactly one of them win.
-- name: ConsumeToken :one
UPDATE tokens SET consumed_at = @now::timestamptz
WHERE token_hash = @token_hash AND purpose = ANY(@purposes::text[])
  AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > @now
RETURNING id, user_id, purpose;

-- Only the newest token of a user and purpose is valid: revokes the live
-- ones of each (user, purpose) pair before a batch of new ones is inserted.
-- The user_id = ANY condition is what the index can use: with the pairs
-- alone the planner, misjudging how many tokens are live, may read them all.
-- name: RevokeLiveTokensOf :exec
UPDATE tokens SET revoked_at = @now::timestamptz
WHERE consumed_at IS NULL AND revoked_at IS NULL
  AND user_id = ANY(@user_ids::uuid[])
  AND (user_id, purpose) IN (SELECT unnest(@user_ids::uuid[]), unnest(@purposes::text[]));

-- name: InsertTokens :exec
INSERT INTO tokens (user_id, purpose, token_hash, created_at, expires_at, delivery_id)
SELECT unnest(@user_ids::uuid[]), unnest(@purposes::text[]), unnest(@hashes::bytea[]), @now::timestamptz,
       unnest(@expires_at::timestamptz[]), unnest(@delivery_ids::uuid[]);

-- Revokes the links of deliveries that failed. The caller holds the
-- deliveries' users' row locks (the one lock order: users, then tokens).
-- Spelled with coalesce so the planner cannot match the partial
-- tokens_live_key: when its statistics say few tokens are live it would read
-- that whole index rather than look the deliveries up in tokens_delivery_idx.
-- name: RevokeTokensOfDeliveries :exec
UPDATE tokens SET revoked_at = @now::timestamptz
WHERE delivery_id = ANY(@delivery_ids::uuid[]) AND coalesce(consumed_at, revoked_at) IS NULL;
