-- The trace an outbox event belongs to (W3C traceparent of the span that wrote it: process's batch, the alerts
-- function's request), sent as the CloudEvent's traceparent so the alerts and notify deliveries continue it.
ALTER TABLE event_outbox ADD COLUMN traceparent text;
