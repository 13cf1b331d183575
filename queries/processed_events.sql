-- Returns no row when the event was already processed by this consumer.
-- name: MarkEventProcessed :one
INSERT INTO processed_events (consumer, event_id)
VALUES (@consumer, @event_id)
ON CONFLICT DO NOTHING
RETURNING processed_at;
