-- Aggregates on plain PostgreSQL: materialised buckets below a watermark per aggregate, plus
-- live aggregation of raw rows at/after it, behind the views telemetry_hourly and
-- telemetry_daily. easysmart.aggregates refreshes them (retention runs it). A TimescaleDB
-- variant gives the same relation names and columns as continuous aggregates.
--
-- Columns of both views: bucket, equipment_id, sensor_id, avg_value, min_value, max_value,
-- sample_count (every reading, text states too), stddev_value (NULL below 2 numbers),
-- median_value, p95_value, p99_value (percentile_cont over value), value_count and value_sum
-- (the numeric readings; they let coarser statistics be combined exactly).

-- key 'daily_timezone': the zone daily buckets were made in (refresh sets it from
-- AGGREGATE_TIMEZONE), read by the live part of telemetry_daily so both agree.
-- key 'raw_horizon': raw rows before it have been dropped; buckets before it are final.
CREATE TABLE aggregate_settings (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
INSERT INTO aggregate_settings (key, value) VALUES ('daily_timezone', 'America/Sao_Paulo'), ('raw_horizon', '-infinity');

CREATE TABLE aggregate_watermarks (
    name          text PRIMARY KEY,
    watermark     timestamptz NOT NULL,
    refreshed_at  timestamptz
);
INSERT INTO aggregate_watermarks (name, watermark) VALUES ('telemetry_hourly', '-infinity'), ('telemetry_daily', '-infinity');

CREATE TABLE telemetry_hourly_mat (
    sensor_id     bigint NOT NULL,
    bucket        timestamptz NOT NULL,
    equipment_id  bigint NOT NULL,
    avg_value     double precision,
    min_value     double precision,
    max_value     double precision,
    sample_count  bigint NOT NULL,
    stddev_value  double precision,
    median_value  double precision,
    p95_value     double precision,
    p99_value     double precision,
    value_count   bigint NOT NULL,
    value_sum     double precision,
    PRIMARY KEY (sensor_id, bucket)
);
CREATE INDEX telemetry_hourly_mat_equipment ON telemetry_hourly_mat (equipment_id, bucket);

CREATE TABLE telemetry_daily_mat (LIKE telemetry_hourly_mat INCLUDING ALL);

-- The bucket functions both the views and the refresh use.
CREATE FUNCTION esm_hour_bucket(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT date_bin('1 hour', ts, timestamptz '2000-01-01 00:00:00+00') $$;

CREATE FUNCTION esm_daily_timezone() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT value FROM aggregate_settings WHERE key = 'daily_timezone' $$;

CREATE VIEW telemetry_hourly AS
SELECT m.bucket, m.equipment_id, m.sensor_id, m.avg_value, m.min_value, m.max_value, m.sample_count, m.stddev_value,
       m.median_value, m.p95_value, m.p99_value, m.value_count, m.value_sum
FROM telemetry_hourly_mat m
WHERE m.bucket < (SELECT watermark FROM aggregate_watermarks WHERE name = 'telemetry_hourly')
UNION ALL
SELECT esm_hour_bucket(t.ts), t.equipment_id, t.sensor_id, avg(t.value), min(t.value), max(t.value), count(*),
       stddev_samp(t.value), percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY t.value), percentile_cont(0.99) WITHIN GROUP (ORDER BY t.value),
       count(t.value), sum(t.value)
FROM telemetry_data t
WHERE t.ts >= (SELECT watermark FROM aggregate_watermarks WHERE name = 'telemetry_hourly')
GROUP BY 1, 2, 3;

CREATE VIEW telemetry_daily AS
SELECT m.bucket, m.equipment_id, m.sensor_id, m.avg_value, m.min_value, m.max_value, m.sample_count, m.stddev_value,
       m.median_value, m.p95_value, m.p99_value, m.value_count, m.value_sum
FROM telemetry_daily_mat m
WHERE m.bucket < (SELECT watermark FROM aggregate_watermarks WHERE name = 'telemetry_daily')
UNION ALL
SELECT date_trunc('day', t.ts, esm_daily_timezone()), t.equipment_id, t.sensor_id, avg(t.value), min(t.value),
       max(t.value), count(*), stddev_samp(t.value), percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY t.value), percentile_cont(0.99) WITHIN GROUP (ORDER BY t.value),
       count(t.value), sum(t.value)
FROM telemetry_data t
WHERE t.ts >= (SELECT watermark FROM aggregate_watermarks WHERE name = 'telemetry_daily')
GROUP BY 1, 2, 3;
