"""The alerts engine: evaluates a tenant's rules when a batch is stored (on the readings' own times) and
silence on the minute tick, and writes alerts and their transition events in one transaction."""

from __future__ import annotations

import logging
from datetime import datetime

from easysmart.clock import Clock, utc_now
from easysmart.config import AlertSettings
from easysmart.db import Database

logger = logging.getLogger(__name__)


class AlertEngine:
    def __init__(self, db: Database, settings: AlertSettings, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    def on_stored(self, data: dict) -> dict:
        """Evaluates the rules of the sensors a stored batch touched (the data of a
        com.easysmart.telemetry.stored event). Returns a report: rules evaluated, alerts fired and resolved."""
        raise NotImplementedError

    def on_tick(self) -> dict:
        """Evaluates silence rules (unless the backend itself is behind). Returns a report."""
        raise NotImplementedError

    def prune(self, resolved_before: datetime) -> int:
        """Deletes alerts resolved before the given time (retention); returns how many."""
        raise NotImplementedError
