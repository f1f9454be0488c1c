-- The alerts engine's own state: upload cadence per equipment (silence), evaluated batches (idempotency).

-- When each equipment last uploaded, and its recent upload times (the engine keeps a few per equipment):
-- silence is measured from the last, against the median gap between them.
CREATE TABLE alert_equipment_state (
    equipment_id      bigint PRIMARY KEY REFERENCES equipment(id),
    tenant_id         uuid NOT NULL REFERENCES tenants(id),
    last_received_at  timestamptz NOT NULL
);
CREATE INDEX alert_equipment_state_tenant ON alert_equipment_state (tenant_id);

CREATE TABLE alert_equipment_uploads (
    equipment_id  bigint NOT NULL REFERENCES equipment(id),
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (equipment_id, received_at)
);

-- Batches whose telemetry.stored event was evaluated, recorded in the evaluation's transaction: a redelivered
-- event finds its batch here and changes nothing.
CREATE TABLE alert_processed_batches (
    batch_id      uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    processed_at  timestamptz NOT NULL
);
CREATE INDEX alert_processed_batches_at ON alert_processed_batches (processed_at);

-- An evaluation reads the alerts of one rule and sensor near a time range; retention prunes by end time.
CREATE INDEX alerts_rule_subject ON alerts (rule_id, equipment_id, sensor_id, started_at);
CREATE INDEX alerts_resolved_ended ON alerts (ended_at) WHERE state = 'resolved';
