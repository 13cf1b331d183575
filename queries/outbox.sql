-- name: InsertOutbox :exec
INSERT INTO outbox (event_id, subject, payload) VALUES (@event_id, @subject, @payload)
ON CONFLICT (event_id) DO NOTHING;

-- name: MarkOutboxPublished :exec
UPDATE outbox SET published_at = now() WHERE event_id = @event_id;

-- Rows left unpublished (the process died after commit) are claimed by one
-- relay at a time.
-- name: ClaimStaleOutbox :many
SELECT event_id, subject, payload FROM outbox
WHERE published_at IS NULL AND created_at < @older_than
ORDER BY created_at
LIMIT @max_rows
FOR UPDATE SKIP LOCKED;

-- name: PruneOutbox :execrows
DELETE FROM outbox WHERE published_at < @before;

-- An event the stream acknowledged is deleted: the stream holds it now, and
-- the table holds only what is waiting to be published.
-- name: DeleteOutbox :exec
DELETE FROM outbox WHERE event_id = ANY(@event_ids::text[]);
