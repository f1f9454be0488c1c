-- A day partition is created apart and then ATTACHed: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on
-- telemetry_data, which no read or write conflicts with, where CREATE TABLE ... PARTITION OF took ACCESS
-- EXCLUSIVE and queued every reader and batch behind any open transaction. Retention creates the partitions
-- of the accepted window ahead of time (easysmart/partitions.py); process calls this only for a day that is
-- truly missing, and finds it made otherwise without taking any lock on telemetry_data (to_regclass).
CREATE OR REPLACE FUNCTION esm_ensure_telemetry_partition(day date) RETURNS text
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
        EXECUTE format('CREATE TABLE %I (LIKE telemetry_data INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition_name);
        EXECUTE format(
            'ALTER TABLE telemetry_data ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            partition_name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN partition_name;
END $$;
