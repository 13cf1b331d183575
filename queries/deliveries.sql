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

-- name: ListDeliveriesByUser :many
SELECT * FROM mail_deliveries
WHERE user_id = @user_id
ORDER BY created_at DESC, id
LIMIT @max_rows;

-- Locks, in id order, the users of deliveries about to be claimed: the first
-- step of the mailer's claim, which then mints tokens. Every role that
-- changes a user's credentials locks the user's row first and in id order
-- (store.LockUser, LockUsersWithDomain), then touches tokens, sessions or
-- deliveries, so no two of them can deadlock. Users that are gone are not
-- returned. The user ids are gathered into an array first so that users is
-- read through its primary key whatever the statistics say: as a semi-join,
-- a small or never-analysed users table was sometimes read whole.
-- name: LockUsersOfDeliveries :many
SELECT sqlc.embed(u), dom.name AS domain_name
FROM users u JOIN domains dom ON dom.id = u.domain_id
WHERE u.id = ANY(ARRAY(SELECT md.user_id FROM mail_deliveries md WHERE md.id = ANY(@ids::uuid[])))
ORDER BY u.id
FOR NO KEY UPDATE OF u;

-- Claims deliveries for one attempt each: queued ones, or ones left
-- "sending" by a worker whose claim lease ran out (updated before
-- stale_before). A delivery whose user is among user_ids (the users locked
-- by LockUsersOfDeliveries) becomes sending; one whose user is gone ends
-- skipped, with that reason. Every row changed is returned; deliveries
-- being sent, finished or unknown are neither changed nor returned.
-- name: ClaimDeliveries :many
WITH d AS (
    UPDATE mail_deliveries md
    SET status = CASE WHEN md.user_id = ANY(@user_ids::uuid[]) THEN 'sending' ELSE 'skipped' END,
        attempts = CASE WHEN md.user_id = ANY(@user_ids::uuid[]) THEN md.attempts + 1 ELSE md.attempts END,
        last_error = CASE WHEN md.user_id = ANY(@user_ids::uuid[]) THEN md.last_error ELSE 'the account no longer exists' END,
        updated_at = @now::timestamptz
    WHERE md.id = ANY(@ids::uuid[])
      AND (md.status = 'queued' OR (md.status = 'sending' AND md.updated_at < @stale_before::timestamptz))
    RETURNING md.id, md.user_id, md.status, md.template, md.locale, md.recipient, md.attempts, md.token_purpose,
              md.token_ttl_seconds, md.created_at
)
SELECT d.id, d.user_id, d.status, d.template, d.locale, d.recipient, d.attempts, d.token_purpose, d.token_ttl_seconds,
       d.created_at,
       -- Only the newest link of a user is valid: handled out of order, an
       -- older email must not revoke the link of a newer one.
       (d.token_purpose IS NOT NULL AND EXISTS (
           SELECT 1 FROM mail_deliveries n
           WHERE n.user_id = d.user_id AND n.token_purpose = d.token_purpose AND n.created_at > d.created_at
             AND n.status IN ('queued', 'sending', 'sent')))::boolean AS superseded
FROM d;

-- Moves on the claim lease of deliveries a worker still holds (sending,
-- with the attempt it claimed) and returns those. A row another
-- transaction has locked is being claimed by another worker, whose lease
-- check found it stale: it is skipped, not waited for, and so no longer
-- this worker's to send.
-- name: RenewClaims :many
WITH mine AS (
    SELECT md.id FROM mail_deliveries md
    JOIN (SELECT unnest(@ids::uuid[]) AS id, unnest(@attempts::integer[]) AS attempts) x ON x.id = md.id
    WHERE md.id = ANY(@ids::uuid[]) AND md.status = 'sending' AND md.attempts = x.attempts
    FOR NO KEY UPDATE OF md SKIP LOCKED
)
UPDATE mail_deliveries md SET updated_at = @now::timestamptz
FROM mine
WHERE md.id = mine.id
RETURNING md.id;

-- name: DeliveriesByKeys :many
SELECT md.idempotency_key, md.id, md.status FROM mail_deliveries md WHERE md.idempotency_key = ANY(@keys::text[]);

-- name: RecentDeliveryCounts :many
SELECT md.user_id, count(*) AS n FROM mail_deliveries md
WHERE md.user_id = ANY(@user_ids::uuid[]) AND md.template = @template AND md.created_at > @since AND md.status <> 'skipped'
GROUP BY md.user_id;

-- name: InsertDeliveries :many
INSERT INTO mail_deliveries (idempotency_key, user_id, template, locale, recipient, status, token_purpose,
                             token_ttl_seconds, source_event_id, created_at, updated_at)
SELECT x.key, x.user_id, @template, x.locale, x.recipient, x.status, sqlc.narg(token_purpose),
       sqlc.narg(token_ttl_seconds), x.source_event_id, @now::timestamptz, @now::timestamptz
FROM (
    SELECT unnest(@keys::text[]) AS key, unnest(@user_ids::uuid[]) AS user_id, unnest(@locales::text[]) AS locale,
           unnest(@recipients::text[]) AS recipient, unnest(@statuses::text[]) AS status,
           unnest(@source_event_ids::text[]) AS source_event_id
) x
RETURNING id, idempotency_key;

-- Records a batch's outcomes, each fenced by the attempt that claimed it
-- (a worker whose claim was taken over writes nothing), with an audit event
-- for those given an audit kind ('' for none) and an outcome event in the
-- outbox for those given an event id ('' for none). Returns the ids of the
-- deliveries recorded.
-- name: FinishDeliveries :many
WITH x AS (
    SELECT unnest(@ids::uuid[]) AS id, unnest(@attempts::integer[]) AS attempts, unnest(@statuses::text[]) AS status,
           unnest(@last_errors::text[]) AS last_error, unnest(@message_ids::text[]) AS message_id,
           unnest(@audit_kinds::text[]) AS audit_kind, unnest(@domain_ids::uuid[]) AS domain_id,
           unnest(@event_ids::text[]) AS event_id, unnest(@event_subjects::text[]) AS event_subject,
           unnest(@event_payloads::bytea[]) AS event_payload
), f AS (
    UPDATE mail_deliveries md
    SET status = x.status, last_error = x.last_error, smtp_message_id = x.message_id, updated_at = @now::timestamptz,
        sent_at = CASE WHEN x.status = 'sent' THEN @now::timestamptz ELSE md.sent_at END
    FROM x
    WHERE md.id = x.id AND md.status = 'sending' AND md.attempts = x.attempts
    RETURNING md.id, md.user_id, md.template, md.attempts, x.audit_kind, x.domain_id, x.last_error, x.event_id,
              x.event_subject, x.event_payload
), audited AS (
    INSERT INTO audit_events (kind, user_id, domain_id, actor_kind, detail)
    SELECT f.audit_kind, f.user_id, NULLIF(f.domain_id, '00000000-0000-0000-0000-000000000000'::uuid), 'system',
           jsonb_strip_nulls(jsonb_build_object('delivery_id', f.id, 'template', f.template, 'attempts', f.attempts,
                                                'error', NULLIF(f.last_error, '')))
    FROM f
    WHERE f.audit_kind <> ''
), queued AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT f.event_id, f.event_subject, f.event_payload FROM f WHERE f.event_id <> ''
    ON CONFLICT (event_id) DO NOTHING
)
SELECT f.id FROM f;

-- Whether a mailer holds a claim on one of the user's deliveries: sending,
-- claimed or renewed since stale_before (now less the claim lease). Such a
-- delivery may be on the wire to the address it was recorded with. Asked
-- under the user's row lock (LockUser), which every claim takes first
-- (LockUsersOfDeliveries): a claim has either committed (and is seen here)
-- or waits for the caller's commit (and then sees what it changed).
-- name: UserHasDeliveryInFlight :one
SELECT EXISTS (
    SELECT 1 FROM mail_deliveries
    WHERE user_id = @user_id AND status = 'sending' AND updated_at >= @stale_before::timestamptz
);
