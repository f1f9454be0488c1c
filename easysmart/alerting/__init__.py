"""Alerting: rules evaluated over the readings' own times when a batch is stored, silence on a minute tick, and
the alert lifecycle (firing, acknowledged, resolved) whose every transition leaves through the outbox."""
