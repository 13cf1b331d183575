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

-- Claims a delivery for one attempt. A delivery already sent, failed or
-- skipped returns no row, so a redelivered mail.requested sends nothing.
-- name: StartDeliveryAttempt :one
UPDATE mail_deliveries SET status = 'sending', attempts = attempts + 1, updated_at = @now::timestamptz
WHERE id = @id AND status IN ('queued', 'sending')
RETURNING *;

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
