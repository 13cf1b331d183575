-- +goose Up

-- A delivery may carry a token grant: the mailer mints the token when it
-- renders the message, so the clear token exists only in the mailer's memory
-- and in the email, never in an event or a table.
ALTER TABLE mail_deliveries
    ADD COLUMN token_purpose     text,
    ADD COLUMN token_ttl_seconds integer,
    ADD COLUMN source_event_id   text NOT NULL DEFAULT '',
    ADD CONSTRAINT mail_deliveries_token_check CHECK ((token_purpose IS NULL) = (token_ttl_seconds IS NULL));
-- Per-account suppression counts recent deliveries of one template.
CREATE INDEX mail_deliveries_user_template_idx ON mail_deliveries (user_id, template, created_at);

ALTER TABLE tokens ADD COLUMN delivery_id uuid REFERENCES mail_deliveries (id) ON DELETE SET NULL;

-- Events that a request's transaction must emit: written in the same
-- transaction as the change, published right after commit, and re-published
-- by a relay if that fails, so a committed change never loses its event.
CREATE TABLE outbox (
    event_id     text PRIMARY KEY,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL;

-- +goose Down
DROP TABLE outbox;
ALTER TABLE tokens DROP COLUMN delivery_id;
DROP INDEX mail_deliveries_user_template_idx;
ALTER TABLE mail_deliveries
    DROP CONSTRAINT mail_deliveries_token_check,
    DROP COLUMN source_event_id,
    DROP COLUMN token_ttl_seconds,
    DROP COLUMN token_purpose;
