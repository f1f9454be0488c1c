-- An outbox row Kafka refuses for good (too large for the topic, an invalid record) is marked refused and
-- skipped, so it cannot hold every later event, every tenant's, behind it. The relay keeps refused rows for a
-- week for an operator to look at (the collector counts them), then deletes them.
ALTER TABLE event_outbox
    ADD COLUMN refused_at  timestamptz,
    ADD COLUMN refusal     text;

DROP INDEX event_outbox_unpublished;
CREATE INDEX event_outbox_waiting ON event_outbox (id) WHERE published_at IS NULL AND refused_at IS NULL;
-- The collector counts refused rows every minute without reading a day of published ones.
CREATE INDEX event_outbox_refused ON event_outbox (topic) WHERE refused_at IS NOT NULL;
