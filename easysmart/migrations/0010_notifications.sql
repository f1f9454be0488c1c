-- Notifications: the tenant's channels, e-mail recipients and their confirmation, one delivery row per
-- (alert transition, channel) with its own retries, and what notify knows of each alert (for reminders).

CREATE TABLE notification_channels (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    type        text NOT NULL CHECK (type IN ('webhook', 'email')),
    url         text,                  -- webhook
    secret      text,                  -- webhook: the HMAC key of X-Easysmart-Signature
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (type <> 'webhook' OR (url IS NOT NULL AND secret IS NOT NULL))
);
CREATE INDEX notification_channels_tenant ON notification_channels (tenant_id, created_at, id);

-- An address receives nothing but its confirmation message until it follows the link. Only the token's
-- SHA-256 is kept; it is cleared when used (single use).
CREATE TABLE email_recipients (
    channel_id            uuid NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    address               text NOT NULL,
    token_sha256          bytea UNIQUE,
    token_expires_at      timestamptz,
    confirmation_sent_at  timestamptz,
    confirmed_at          timestamptz,
    PRIMARY KEY (channel_id, address)
);
CREATE INDEX email_recipients_unsent ON email_recipients (channel_id)
    WHERE confirmation_sent_at IS NULL AND confirmed_at IS NULL;

-- One row per (event, channel): a redelivered event inserts nothing. delivery_id is the stable
-- X-Easysmart-Delivery of (alert, transition, sequence, channel). States: pending (next_attempt_at says when),
-- done (never sent again), failed (out of retries), skipped (an e-mail channel with no confirmed recipient).
-- Past a channel's rate, what is due goes out folded into one digest message (sent_as: the digest's id).
CREATE TABLE notification_deliveries (
    id               bigserial PRIMARY KEY,
    delivery_id      uuid NOT NULL UNIQUE,
    event_id         text NOT NULL,
    channel_id       uuid NOT NULL REFERENCES notification_channels(id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    alert_id         uuid NOT NULL,
    event            jsonb NOT NULL,       -- the CloudEvent as sent in structured mode
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,          -- a worker is sending it: nobody else may until then
    last_status      integer,              -- the remote's HTTP status (its body is never kept)
    last_error       text,                 -- why the last attempt failed, in our words
    sent_as          uuid,                 -- the message it went out in: its delivery_id, or a digest's id
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    UNIQUE (event_id, channel_id)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (channel_id, id) WHERE state = 'pending';
CREATE INDEX notification_deliveries_alert ON notification_deliveries (channel_id, alert_id, id);
CREATE INDEX notification_deliveries_sent ON notification_deliveries (tenant_id, finished_at) WHERE state = 'done';
CREATE INDEX notification_deliveries_channel_sent ON notification_deliveries (channel_id, finished_at)
    WHERE state = 'done';

-- The newest transition notify has seen of each alert: an unacknowledged critical alert is notified again.
CREATE TABLE notified_alerts (
    alert_id          uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    severity          text NOT NULL,
    transition        text NOT NULL,
    sequence          integer NOT NULL,
    event             jsonb NOT NULL,      -- the newest transition's CloudEvent (a reminder repeats its data)
    reminders         integer NOT NULL DEFAULT 0,
    last_notified_at  timestamptz NOT NULL
);
CREATE INDEX notified_alerts_reminders ON notified_alerts (last_notified_at)
    WHERE transition = 'fired' AND severity = 'critical';
