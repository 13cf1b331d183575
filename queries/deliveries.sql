-- Returns no row when a delivery with this key exists already: the caller
-- then looks it up instead of deciding to send twice.
-- name: InsertDelivery :one
INSERT INTO mail_deliveries (idempotency_key, user_id, template, locale, recipient, status, token_purpose, token_ttl_seconds, source_event_id, created_at, updated_at)
VALUES (@idempotency_key, @user_id, @template, @locale, @recipient, @status, sqlc.narg(token_purpose), sqlc.narg(token_ttl_seconds), @source_event_id, @now, @now)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *;

-- name: GetDeliveryByKey :one
SELECT * FROM mail_deliveries WHERE idempotency_key = @idempotency_key;

-- name: GetDelivery :one
SELECT * FROM mail_deliveries WHERE id = @id;

-- Claims a delivery for one attempt: a queued one, or one left "sending" by
-- a worker that died (its claim older than stale_before). A delivery sent,
-- failed, skipped, or being sent right now returns no row.
-- name: StartDeliveryAttempt :one
UPDATE mail_deliveries SET status = 'sending', attempts = attempts + 1, updated_at = @now::timestamptz
WHERE id = @id AND (status = 'queued' OR (status = 'sending' AND updated_at < @stale_before::timestamptz))
RETURNING *;

-- A retry of an older delivery must not revoke the link of a newer one.
-- name: NewerDeliveryExists :one
SELECT EXISTS (
    SELECT 1 FROM mail_deliveries
    WHERE user_id = @user_id AND token_purpose = @token_purpose AND created_at > @created_at
      AND status IN ('queued', 'sending', 'sent')
);

-- name: FinishDelivery :exec
UPDATE mail_deliveries
SET status = @status, last_error = @last_error, smtp_message_id = @smtp_message_id, updated_at = @now::timestamptz,
    sent_at = CASE WHEN @status = 'sent' THEN @now ELSE sent_at END
WHERE id = @id;

-- name: CountRecentDeliveries :one
SELECT count(*) FROM mail_deliveries
WHERE user_id = @user_id AND template = @template AND created_at > @since AND status <> 'skipped';

-- name: ListDeliveriesByUser :many
SELECT * FROM mail_deliveries
WHERE user_id = @user_id
ORDER BY created_at DESC, id
LIMIT @max_rows;
