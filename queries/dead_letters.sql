-- A message reaches the dead-letter path once per consumer and stream
-- sequence; the handler and the max-deliveries advisory may both report it.
-- name: InsertDeadLetter :exec
INSERT INTO dead_letters (consumer, stream_sequence, event_id, event_type, subject, payload, reason, attempts)
VALUES (@consumer, @stream_sequence, @event_id, @event_type, @subject, @payload, @reason, @attempts)
ON CONFLICT (consumer, stream_sequence) DO NOTHING;

-- name: ListDeadLetters :many
SELECT id, consumer, stream_sequence, event_id, event_type, subject, reason, attempts, created_at, replayed_at
FROM dead_letters
WHERE (sqlc.narg(before)::timestamptz IS NULL OR created_at < sqlc.narg(before))
ORDER BY created_at DESC, id
LIMIT @max_rows;
