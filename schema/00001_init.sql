-- +goose Up

-- Tenants. A user belongs to exactly one domain.
CREATE TABLE domains (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    locale     text NOT NULL DEFAULT 'en',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT domains_name_key UNIQUE (name),
    CONSTRAINT domains_name_length CHECK (char_length(name) BETWEEN 1 AND 253)
);

CREATE TABLE users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    domain_id           uuid NOT NULL REFERENCES domains (id),
    extension           text NOT NULL,
    login_name          text NOT NULL,
    -- Email is deliberately not unique: one person may own accounts in
    -- several domains, which is what makes "forgot login name" ambiguous.
    email               text NOT NULL,
    first_name          text NOT NULL DEFAULT '',
    last_name           text NOT NULL DEFAULT '',
    -- Empty means "the domain's locale".
    locale              text NOT NULL DEFAULT '',
    -- PHC strings; NULL until set. A user without a password logs in with
    -- the PIN and is subject to the rollout.
    password_hash       text,
    password_changed_at timestamptz,
    pin_hash            text,
    pin_changed_at      timestamptz,
    status              text NOT NULL DEFAULT 'active',
    failed_logins       integer NOT NULL DEFAULT 0,
    locked_until        timestamptz,
    rollout_phase       text NOT NULL DEFAULT 'none',
    rollout_phase_at    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_domain_extension_key UNIQUE (domain_id, extension),
    CONSTRAINT users_status_check CHECK (status IN ('active', 'disabled')),
    CONSTRAINT users_rollout_phase_check CHECK (rollout_phase IN ('none', 'warn', 'force', 'reset'))
);

-- Login names are unique regardless of case.
CREATE UNIQUE INDEX users_login_name_key ON users (lower(login_name));
CREATE INDEX users_email_idx ON users (lower(email));
-- The rollout scheduler works only on users without a password.
CREATE INDEX users_rollout_idx ON users (domain_id, rollout_phase) WHERE password_hash IS NULL;

-- Single-use tokens: reset links, welcome codes, forced-setup and legacy
-- confirmation tokens. Only a SHA-256 of the token is stored.
CREATE TABLE tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose         text NOT NULL,
    token_hash      bytea NOT NULL,
    -- The event that asked for this token: a redelivered event finds the
    -- token it already minted instead of minting a second one.
    source_event_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT tokens_hash_key UNIQUE (token_hash),
    CONSTRAINT tokens_purpose_check CHECK (purpose IN ('reset', 'welcome', 'setup', 'legacy_confirm'))
);

-- At most one live token per user and purpose: issuing a new one must revoke
-- the old one in the same transaction, and racing issuers serialise here.
CREATE UNIQUE INDEX tokens_live_key ON tokens (user_id, purpose)
    WHERE consumed_at IS NULL AND revoked_at IS NULL;
CREATE UNIQUE INDEX tokens_source_event_key ON tokens (purpose, source_event_id)
    WHERE source_event_id IS NOT NULL;

CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT sessions_hash_key UNIQUE (token_hash)
);
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- Every credential event: requested, sent, consumed, failed, changed, locked.
-- Never holds a token or a secret.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    domain_id   uuid REFERENCES domains (id) ON DELETE SET NULL,
    actor_kind  text NOT NULL,
    actor_id    text NOT NULL DEFAULT '',
    source_addr text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    detail      jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT audit_events_actor_kind_check CHECK (actor_kind IN ('self', 'admin', 'scheduler', 'legacy', 'system'))
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, occurred_at);

-- One row per email the service decided to send. The idempotency key makes
-- "decide to send" happen once per event, and the status makes "send" happen
-- once per row even when the mailer crashes between the SMTP reply and the ack.
CREATE TABLE mail_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    idempotency_key text NOT NULL,
    user_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    template        text NOT NULL,
    locale          text NOT NULL,
    recipient       text NOT NULL,
    status          text NOT NULL DEFAULT 'queued',
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    smtp_message_id text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT mail_deliveries_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT mail_deliveries_status_check CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'skipped'))
);
CREATE INDEX mail_deliveries_user_idx ON mail_deliveries (user_id, created_at);

-- Messages a worker gave up on. Kept with their full envelope so an operator
-- can see why and replay them.
CREATE TABLE dead_letters (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    consumer        text NOT NULL,
    stream_sequence bigint NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    subject         text NOT NULL,
    payload         bytea NOT NULL,
    reason          text NOT NULL,
    attempts        integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    CONSTRAINT dead_letters_message_key UNIQUE (consumer, stream_sequence)
);
CREATE INDEX dead_letters_created_idx ON dead_letters (created_at DESC);

-- Events a consumer has applied, recorded in the same transaction as the
-- effect: at-least-once delivery, exactly-once effect.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- The dated PIN-to-password rollout. domain_id NULL is the global schedule.
CREATE TABLE rollout_schedules (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    domain_id  uuid REFERENCES domains (id) ON DELETE CASCADE,
    warn_at    timestamptz NOT NULL,
    force_at   timestamptz NOT NULL,
    reset_at   timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rollout_schedules_domain_key UNIQUE NULLS NOT DISTINCT (domain_id),
    CONSTRAINT rollout_schedules_order_check CHECK (warn_at <= force_at AND force_at <= reset_at)
);

-- Admin overrides of the built-in email templates, per template and locale.
CREATE TABLE template_overrides (
    name       text NOT NULL,
    locale     text NOT NULL,
    subject    text NOT NULL,
    body_text  text NOT NULL,
    body_html  text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, locale)
);

-- Sender identity. domain_id NULL is the global setting.
CREATE TABLE mail_settings (
    domain_id    uuid REFERENCES domains (id) ON DELETE CASCADE,
    from_name    text NOT NULL,
    from_address text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mail_settings_domain_key UNIQUE NULLS NOT DISTINCT (domain_id)
);

-- Admin API keys. Only a SHA-256 of the key is stored. A key with a domain
-- sees only that domain.
CREATE TABLE admin_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL,
    domain_id    uuid REFERENCES domains (id) ON DELETE CASCADE,
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT admin_keys_hash_key UNIQUE (key_hash)
);

-- +goose Down
DROP TABLE admin_keys;
DROP TABLE mail_settings;
DROP TABLE template_overrides;
DROP TABLE rollout_schedules;
DROP TABLE processed_events;
DROP TABLE dead_letters;
DROP TABLE mail_deliveries;
DROP TABLE audit_events;
DROP TABLE sessions;
DROP TABLE tokens;
DROP TABLE users;
DROP TABLE domains;
