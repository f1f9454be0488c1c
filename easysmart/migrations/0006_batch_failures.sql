-- Unexpected errors of a batch, counted apart from its delivery attempts: an outage's retries do
-- not count, and a batch that keeps failing unexpectedly is failed and dead-lettered at a cap.
ALTER TABLE batches ADD COLUMN unexpected_failures integer NOT NULL DEFAULT 0;
