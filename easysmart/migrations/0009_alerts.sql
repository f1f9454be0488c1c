-- Alerting: the transactional outbox, rules, alerts and their lifecycle, maintenance windows.

-- Events that must leave exactly when a transaction commits (the batch's "stored" event, an alert's
-- transitions). Written in that transaction; the outbox relay publishes them to Kafka and marks them.
-- event_id is the CloudEvents id: a row published twice (relay crash before marking) carries the same
-- id, and consumers are idempotent on it.
CREATE TABLE event_outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    kafka_key     text NOT NULL,          -- per-tenant order on one partition
    type          text NOT NULL,          -- CloudEvents type, e.g. com.easysmart.telemetry.stored
    source        text NOT NULL,          -- CloudEvents source, e.g. /easysmart/process
    subject       text,
    data          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);
CREATE INDEX event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;

-- A rule watches one sensor (sensor_id), every sensor of a kind in one equipment (equipment_id +
-- sensor_kind), or every sensor of a kind in the tenant (sensor_kind only); silence rules watch an
-- equipment, or every equipment of the tenant. Thresholds: above / below, hysteresis, durations.
CREATE TABLE alert_rules (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id),
    type           text NOT NULL CHECK (type IN ('threshold', 'door_open', 'silence', 'battery_low')),
    origin         text NOT NULL DEFAULT 'user' CHECK (origin IN ('user', 'client')),
    severity       text NOT NULL CHECK (severity IN ('warning', 'critical')),
    name           text,
    equipment_id   bigint REFERENCES equipment(id),
    sensor_id      bigint REFERENCES sensors(id),
    sensor_kind    text,                   -- easysmart.payload's English kinds (temperature, door, ...)
    above          double precision,
    below          double precision,
    hysteresis     double precision NOT NULL DEFAULT 0 CHECK (hysteresis >= 0),
    for_s          integer CHECK (for_s >= 0),          -- duration beyond the bound before firing
    resolve_for_s  integer NOT NULL DEFAULT 0 CHECK (resolve_for_s >= 0),
    enabled        boolean NOT NULL DEFAULT true,       -- a deleted client-origin rule stays, disabled
    user_edited    boolean NOT NULL DEFAULT false,      -- a client-origin rule a user edited stops following the client
    deleted_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_tenant ON alert_rules (tenant_id) WHERE deleted_at IS NULL;
-- The client's default door rule: one per equipment.
CREATE UNIQUE INDEX alert_rules_client_door ON alert_rules (equipment_id) WHERE origin = 'client';

-- One alert per excursion. At most one open (not resolved) alert per (rule, sensor or equipment).
CREATE TABLE alerts (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    rule_id          uuid NOT NULL REFERENCES alert_rules(id),
    type             text NOT NULL,
    severity         text NOT NULL,
    equipment_id     bigint NOT NULL REFERENCES equipment(id),
    sensor_id        bigint REFERENCES sensors(id),      -- NULL for silence
    state            text NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    started_at       timestamptz NOT NULL,               -- the readings' own time the excursion began
    ended_at         timestamptz,
    trigger_value    double precision,
    peak_value       double precision,
    late             boolean NOT NULL DEFAULT false,     -- learnt from readings that arrived late
    learnt_at        timestamptz NOT NULL DEFAULT now(), -- when the backend learnt of it
    acknowledged_by  uuid REFERENCES accounts(id),
    acknowledged_at  timestamptz,
    ack_comment      text,
    snoozed_until    timestamptz,
    transitions      integer NOT NULL DEFAULT 1,         -- flapping folds transitions into one alert
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule_id, equipment_id, coalesce(sensor_id, 0)) WHERE state <> 'resolved';
CREATE INDEX alerts_tenant_started ON alerts (tenant_id, started_at DESC, id);

-- Defrost, cleaning: no rule fires for the equipment inside a window.
CREATE TABLE maintenance_windows (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id),
    equipment_id  bigint NOT NULL REFERENCES equipment(id),
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_windows_equipment ON maintenance_windows (equipment_id, ends_at);
