-- Equipment and sensors keyed by (tenant, uuid); the batch ledger that makes redelivery harmless.
CREATE TABLE equipment (
    id                  bigserial PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants(id),
    uuid                text NOT NULL,
    name                text,
    location            text,
    status              text,
    collect_interval_s  integer,
    siren_active        boolean,
    siren_time_s        integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, uuid)
);

CREATE TABLE sensors (
    id            bigserial PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id),
    equipment_id  bigint NOT NULL REFERENCES equipment(id),
    uuid          text NOT NULL,
    name          text,
    kind          text,
    unit          text,
    status        text,
    manufacturer  text,
    model         text,
    firmware      text,
    hardware_id   text,
    via_hub       boolean,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, uuid)
);
CREATE INDEX sensors_equipment ON sensors (equipment_id);

CREATE TABLE batches (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants(id),
    account_id          uuid NOT NULL,
    request_id          text,
    sha256              text NOT NULL,       -- of the stored gzip blob (timestamp zeroed)
    status              text NOT NULL CHECK (status IN ('accepted', 'processing', 'done', 'failed')),
    received_items      integer,
    readings            integer,
    stored              integer NOT NULL DEFAULT 0,
    duplicate           integer NOT NULL DEFAULT 0,
    skipped             integer NOT NULL DEFAULT 0,
    rejected            integer NOT NULL DEFAULT 0,
    reasons             jsonb NOT NULL DEFAULT '[]',
    reason_counts       jsonb NOT NULL DEFAULT '{}',
    bucket              text NOT NULL,
    object_key          text NOT NULL,
    size_bytes          bigint NOT NULL,
    decompressed_bytes  bigint,              -- NULL: larger than ingest's synchronous window
    attempts            integer NOT NULL DEFAULT 0,
    received_at         timestamptz NOT NULL,
    processed_at        timestamptz
);
-- Finds an identical earlier upload of the same device (dedup within the blob retention).
CREATE INDEX batches_dedup ON batches (account_id, sha256, received_at DESC);
CREATE INDEX batches_received ON batches (received_at);
