-- Aggregates on TimescaleDB: continuous aggregates with real-time aggregation, giving the same
-- relation names and columns as the plain mode (0004_aggregates.postgres.sql): bucket,
-- equipment_id, sensor_id, avg_value, min_value, max_value, sample_count, stddev_value,
-- median_value, p95_value, p99_value, value_count, value_sum.
--
-- Refresh policies cover the whole raw retention (late data up to 30 days old is accepted;
-- TimescaleDB re-materialises only invalidated ranges). Raw chunks are dropped by the retention
-- function with drop_chunks bounded by the aggregates' watermarks (never before they are
-- materialised); the policy below is the platform's backstop with a day's margin over the
-- refresh window. Daily buckets are days in America/Sao_Paulo: a continuous aggregate fixes
-- its zone when created (recorded in aggregate_settings, like the plain mode).

CREATE TABLE aggregate_settings (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
INSERT INTO aggregate_settings (key, value) VALUES ('daily_timezone', 'America/Sao_Paulo'), ('raw_horizon', '-infinity');

CREATE MATERIALIZED VIEW telemetry_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 hour', ts) AS bucket, equipment_id, sensor_id,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, count(*) AS sample_count,
       stddev_samp(value) AS stddev_value, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median_value,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95_value,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99_value,
       count(value) AS value_count, sum(value) AS value_sum
FROM telemetry_data
GROUP BY time_bucket('1 hour', ts), equipment_id, sensor_id
WITH NO DATA;

CREATE MATERIALIZED VIEW telemetry_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 day', ts, 'America/Sao_Paulo') AS bucket, equipment_id, sensor_id,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value, count(*) AS sample_count,
       stddev_samp(value) AS stddev_value, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median_value,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95_value,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99_value,
       count(value) AS value_count, sum(value) AS value_sum
FROM telemetry_data
GROUP BY time_bucket('1 day', ts, 'America/Sao_Paulo'), equipment_id, sensor_id
WITH NO DATA;

CREATE INDEX telemetry_hourly_equipment ON telemetry_hourly (equipment_id, bucket);
CREATE INDEX telemetry_hourly_sensor ON telemetry_hourly (sensor_id, bucket);
CREATE INDEX telemetry_daily_equipment ON telemetry_daily (equipment_id, bucket);
CREATE INDEX telemetry_daily_sensor ON telemetry_daily (sensor_id, bucket);

SELECT add_continuous_aggregate_policy('telemetry_hourly', start_offset => interval '31 days',
                                       end_offset => interval '1 hour', schedule_interval => interval '30 minutes');
SELECT add_continuous_aggregate_policy('telemetry_daily', start_offset => interval '32 days',
                                       end_offset => interval '1 day', schedule_interval => interval '2 hours');
SELECT add_retention_policy('telemetry_data', drop_after => interval '32 days');
