-- Time ranges of readings that batches stored, appended by process in each batch's own
-- transaction. The plain-PostgreSQL refresh re-materialises every aggregate bucket a range
-- touches and deletes the rows it handled; in TimescaleDB mode (where invalidation is
-- tracked by TimescaleDB) retention just prunes them. In every mode, hence no mode suffix.
CREATE TABLE aggregate_touched (
    id         bigserial PRIMARY KEY,
    lo         timestamptz NOT NULL,
    hi         timestamptz NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
