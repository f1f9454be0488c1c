-- Raw readings, natively range-partitioned by UTC day. Partitions are created on demand by
-- esm_ensure_telemetry_partition (process calls it for every day a batch touches).
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
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_data_equipment_ts ON telemetry_data (equipment_id, ts);

CREATE FUNCTION esm_ensure_telemetry_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text := format('telemetry_data_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN partition_name;
    END IF;
    -- Serialises concurrent creators of the same day; the loser finds the table made.
    PERFORM pg_advisory_xact_lock(hashtext(partition_name));
    IF to_regclass(partition_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF telemetry_data FOR VALUES FROM (%L) TO (%L)',
            partition_name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN partition_name;
END $$;
