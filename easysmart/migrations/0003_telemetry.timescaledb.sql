-- Raw readings as a TimescaleDB hypertable with 1-day chunks (same columns as the plain mode).
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE telemetry_data (
    sensor_id        bigint NOT NULL,
    equipment_id     bigint NOT NULL,
    ts               timestamptz NOT NULL,
    value            double precision,
    state            text,
    battery_pct      real,
    lqi              real,
    rssi             real,
    battery_voltage  real,
    voltage          real,
    current          real,
    power            real,
    PRIMARY KEY (sensor_id, ts)
);
SELECT create_hypertable('telemetry_data', 'ts', chunk_time_interval => interval '1 day');
CREATE INDEX telemetry_data_equipment_ts ON telemetry_data (equipment_id, ts);

-- Chunks are created by TimescaleDB itself; the function exists so callers need not know the mode.
CREATE FUNCTION esm_ensure_telemetry_partition(day date) RETURNS text
LANGUAGE sql AS $$ SELECT 'telemetry_data'::text $$;
