"""The alerts engine: evaluates a tenant's rules when a batch is stored (on the readings' own times) and
silence on the minute tick, and writes alerts and their transition events in one transaction.

On arrival, each (rule, sensor) pair the batch touched is evaluated over the sensor's readings in the batch's
range, widened before it by the rule's durations and a gap (a run that began earlier) and after it by the same
and the flapping window (a late range's excursion closed by readings already stored). The excursions found are
reconciled with the rule's alerts of that sensor: one overlapping an alert continues it (peak, resolution), one
overlapping none is a new alert. Reconciliation makes evaluating the same readings twice harmless; the batch
recorded in alert_processed_batches, in the same transaction, makes a redelivered event change nothing at all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg2.extensions

from easysmart.alerting import lifecycle, store
from easysmart.alerting.evaluation import (
    Bound,
    Excursion,
    Policy,
    Sample,
    excursions,
    in_window,
    is_late,
    silence_threshold_s,
    suppressed,
)
from easysmart.clock import Clock, utc_now
from easysmart.config import AlertSettings
from easysmart.db import Database
from easysmart.errors import BadRequestError

logger = logging.getLogger(__name__)

# Alerts' ids derive from (rule, equipment, sensor, start): the same excursion found twice is the same alert.
ALERT_NAMESPACE = uuid.UUID("0b6c7c8e-3f0e-4d55-8a3e-6f2f3c9b1d27")
# A batch's evaluation record outlives any redelivery of its event (the dead-letter retention's 30 days).
EVALUATED_KEPT = timedelta(days=35)
# The processing lag looks at what arrived within this many times its bound: during an outage newer uploads keep
# waiting, so the lag stays visible, while a batch given up on (dead-lettered, left 'processing') stops counting
# once older, instead of holding silence off for everyone.
LAG_LOOKBACK_FACTOR = 6
_WATCHED_COLUMN = {"threshold": "value", "door_open": "value", "battery_low": "battery_pct"}


@dataclass(frozen=True)
class WatchedSensor:
    id: int
    equipment_id: int
    kind: str | None
    first_ts: datetime
    last_ts: datetime


def _parse_stored(data: dict) -> tuple[str, str, datetime, list[int], list[WatchedSensor]]:
    """(tenant, batch, received_at, equipment ids, sensors) of a stored event's data; BadRequestError names
    the field that is missing or malformed (a poison event, dead-lettered rather than retried)."""
    path = "tenant_id"
    try:
        tenant_id = str(uuid.UUID(str(data["tenant_id"])))
        path = "batch_id"
        batch_id = str(uuid.UUID(str(data["batch_id"])))
        path = "received_at"
        received_at = datetime.fromisoformat(str(data["received_at"]))
        equipment_ids = []
        for index, item in enumerate(data.get("equipment") or []):
            path = f"equipment[{index}].equipment_id"
            equipment_ids.append(int(item["equipment_id"]))
        sensors = []
        for index, item in enumerate(data.get("sensors") or []):
            path = f"sensors[{index}]"
            sensors.append(
                WatchedSensor(
                    int(item["sensor_id"]),
                    int(item["equipment_id"]),
                    item.get("kind"),
                    datetime.fromisoformat(str(item["first_ts"])),
                    datetime.fromisoformat(str(item["last_ts"])),
                )
            )
    except (KeyError, TypeError, ValueError) as error:
        raise BadRequestError(f"telemetry.stored data: {path}: missing or malformed ({error})", path=path) from None
    return tenant_id, batch_id, received_at, sorted(set(equipment_ids)), sensors


def applies(rule: dict, sensor: WatchedSensor) -> bool:
    """Whether a rule watches the sensor: the sensor itself, a kind in its equipment, or a kind in the tenant
    (door rules watch door sensors; battery rules every sensor of their equipment or tenant)."""
    if rule["sensor_id"] is not None:
        return rule["sensor_id"] == sensor.id
    if rule["equipment_id"] is not None and rule["equipment_id"] != sensor.equipment_id:
        return False
    kind = rule["sensor_kind"] or ("door" if rule["type"] == "door_open" else None)
    if rule["type"] == "battery_low" and kind is None:
        return True
    return kind is not None and kind == sensor.kind


def policy_of(rule: dict, gap_s: float, settings: AlertSettings) -> Policy:
    if rule["type"] == "door_open":
        bound = Bound(above=0.5)  # a door reading is 1 when open
    else:
        bound = Bound(rule["above"], rule["below"], rule["hysteresis"] or 0.0)
    return Policy(
        bound,
        for_s=rule["for_s"] or 0,
        resolve_for_s=rule["resolve_for_s"] or 0,
        gap_s=gap_s,
        flap_transitions=settings.alert_flap_transitions,
        flap_window_s=settings.alert_flap_window_s,
        held=rule["type"] == "door_open",
    )


def _utc_text(moment: datetime) -> str:
    """The instant as one text whatever the session's zone (alert ids derive from it)."""
    return moment.astimezone(timezone.utc).isoformat()


def _overlaps(excursion: Excursion, alert: dict) -> bool:
    far = datetime.max.replace(tzinfo=excursion.started_at.tzinfo)
    return excursion.started_at <= (alert["ended_at"] or far) and alert["started_at"] <= (excursion.ended_at or far)


class AlertEngine:
    def __init__(self, db: Database, settings: AlertSettings, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    # --- Arrival ---------------------------------------------------------------------------------

    def on_stored(self, data: dict) -> dict:
        """Evaluates the rules of the sensors a stored batch touched (the data of a
        com.easysmart.telemetry.stored event). Returns a report: rules evaluated, alerts fired and resolved."""
        tenant_id, batch_id, received_at, equipment_ids, sensors = _parse_stored(data)
        report: dict = {"tenant_id": tenant_id, "batch_id": batch_id, "redelivered": False, "rules_evaluated": 0}
        report.update(fired=[], resolved=[], client_rules_changed=0)
        now = self.clock()
        with self.db.transaction() as cursor:
            # Four round trips before the rules are evaluated, whatever the batch: most batches fire nothing.
            arrival = store.claim_batch(
                cursor, tenant_id, batch_id, now, [sensor.id for sensor in sensors], equipment_ids
            )
            if not arrival.new:
                report["redelivered"] = True
                return report
            # The event is process's, but an alert must never name another tenant's sensor or equipment.
            sensors = [sensor for sensor in sensors if sensor.id in arrival.sensors]
            all_equipment = sorted(set(arrival.equipment) | {sensor.equipment_id for sensor in sensors})
            uploads = store.record_uploads(
                cursor, tenant_id, all_equipment, received_at, self.settings.alert_silence_uploads_kept
            )
            report["client_rules_changed"], resolved = store.follow_upload(
                cursor, tenant_id, all_equipment, received_at, now
            )
            for alert_id in resolved:
                lifecycle.emit(cursor, alert_id, "resolved")
            report["resolved"] += resolved
            rules = store.rules_for(cursor, tenant_id, [sensor.id for sensor in sensors], all_equipment)
            for sensor in sensors:
                gap_s = silence_threshold_s(
                    uploads.get(sensor.equipment_id, []),
                    self.settings.alert_silence_min_s,
                    self.settings.alert_silence_cadence_factor,
                )
                for rule in rules:
                    if applies(rule, sensor):
                        report["rules_evaluated"] += 1
                        self._evaluate(cursor, tenant_id, rule, sensor, gap_s, received_at, now, report)
        logger.info(
            "alerts evaluated",
            extra={"tenant": tenant_id, "batch_id": batch_id, "fired": len(report["fired"])},
        )
        return report

    def _evaluate(
        self,
        cursor: psycopg2.extensions.cursor,
        tenant_id: str,
        rule: dict,
        sensor: WatchedSensor,
        gap_s: float,
        received_at: datetime,
        now: datetime,
        report: dict,
    ) -> None:
        policy = policy_of(rule, gap_s, self.settings)
        before = timedelta(seconds=max(policy.for_s, policy.resolve_for_s) + gap_s)
        after = before + timedelta(seconds=policy.flap_window_s)
        start, end = sensor.first_ts - before, sensor.last_ts + after
        near = store.alerts_near(
            cursor, rule["id"], sensor.equipment_id, sensor.id, start - timedelta(seconds=policy.flap_window_s), end
        )
        ongoing = None
        history = []
        for alert in near:
            history += [t for t in (alert["started_at"], alert["ended_at"]) if t is not None and t < start]
            if alert["state"] != "resolved" and alert["started_at"] < start:
                ongoing = Excursion(
                    alert["started_at"],
                    alert["trigger_value"],
                    alert["started_at"],
                    alert["peak_value"],
                    alert_id=str(alert["id"]),
                )
        samples = [
            Sample(ts, value)
            for ts, value in store.readings(cursor, sensor.id, _WATCHED_COLUMN[rule["type"]], start, end, policy.held)
        ]
        found = excursions(samples, policy, ongoing, history)
        windows = store.maintenance_windows(cursor, sensor.equipment_id, start, end) if found else []
        for excursion in found:
            matches = [a for a in near if str(a["id"]) == excursion.alert_id or _overlaps(excursion, a)]
            open_matches = [a for a in matches if a["state"] != "resolved"]
            if open_matches:
                self._continue(cursor, open_matches[0], excursion, policy.bound, now, report)
            elif not matches and not suppressed(windows, excursion, samples[-1].ts):
                self._fire(cursor, tenant_id, rule, sensor, excursion, received_at, now, report)

    @staticmethod
    def _continue(
        cursor: psycopg2.extensions.cursor, alert: dict, excursion: Excursion, bound: Bound, now: datetime, report: dict
    ) -> None:
        """An open alert's excursion seen again: its peak, the flips folded into it, its resolution."""
        peak = bound.worse(alert["peak_value"], excursion.peak_value)
        if excursion.ended_at is not None:
            store.resolve_alert(cursor, alert["id"], excursion.ended_at, peak, excursion.folded, now)
            alert.update(state="resolved", ended_at=excursion.ended_at)
            lifecycle.emit(cursor, str(alert["id"]), "resolved")
            report["resolved"].append(str(alert["id"]))
        elif peak != alert["peak_value"] or excursion.folded:
            store.update_open_alert(cursor, alert["id"], peak, excursion.folded, now)
            alert["peak_value"] = peak

    def _fire(
        self,
        cursor: psycopg2.extensions.cursor,
        tenant_id: str,
        rule: dict,
        sensor: WatchedSensor,
        excursion: Excursion,
        received_at: datetime,
        now: datetime,
        report: dict,
    ) -> None:
        started = _utc_text(excursion.started_at)
        alert_id = str(uuid.uuid5(ALERT_NAMESPACE, f"{rule['id']}:{sensor.equipment_id}:{sensor.id}:{started}"))
        resolved = excursion.ended_at is not None
        inserted = store.insert_alert(
            cursor,
            {
                "id": alert_id,
                "tenant_id": tenant_id,
                "rule_id": rule["id"],
                "type": rule["type"],
                "severity": rule["severity"],
                "equipment_id": sensor.equipment_id,
                "sensor_id": sensor.id,
                "state": "resolved" if resolved else "firing",
                "started_at": excursion.started_at,
                "ended_at": excursion.ended_at,
                "trigger_value": excursion.trigger_value,
                "peak_value": excursion.peak_value,
                "late": is_late(excursion.fired_at, received_at, self.settings.alert_late_after_s),
                "learnt_at": now,
                "transitions": 1 + excursion.folded + (1 if resolved else 0),
                "created_at": now,
                "updated_at": now,
            },
        )
        if inserted:
            # One event even when the excursion already ended: notified once, with its end.
            lifecycle.emit(cursor, alert_id, "fired")
            report["fired"].append(alert_id)

    # --- The minute tick -------------------------------------------------------------------------

    def on_tick(self) -> dict:
        """Evaluates silence rules, unless the backend itself is behind (then every shop would look silent), and
        prunes the history past its days (an index range, cheap each minute). Returns a report: the processing
        lag, alerts fired, alerts pruned."""
        now = self.clock()
        with self.db.transaction() as cursor:
            lookback = timedelta(seconds=LAG_LOOKBACK_FACTOR * self.settings.alert_max_processing_lag_s)
            lag_s = store.processing_lag_s(cursor, now, now - lookback)
            tenants = store.tenants_with_silence_rules(cursor)
        report: dict = {"processing_lag_s": lag_s, "skipped": False, "tenants": 0, "fired": []}
        report["pruned"] = self.prune(now)
        if lag_s > self.settings.alert_max_processing_lag_s:
            logger.warning("silence not evaluated: the backend is behind", extra={"lag_s": lag_s})
            report["skipped"] = True
            return report
        for tenant_id in tenants:
            with self.db.transaction() as cursor:
                store.lock_tenant(cursor, tenant_id)
                self._evaluate_silence(cursor, tenant_id, now, report)
            report["tenants"] += 1
        return report

    def _evaluate_silence(
        self, cursor: psycopg2.extensions.cursor, tenant_id: str, now: datetime, report: dict
    ) -> None:
        last_uploads = store.equipment_last_uploads(cursor, tenant_id)
        rules = store.silence_rules(cursor, tenant_id)
        uploads = store.upload_times(cursor, list(last_uploads))
        for rule in rules:
            watched = [rule["equipment_id"]] if rule["equipment_id"] is not None else list(last_uploads)
            for equipment_id in watched:
                last = last_uploads.get(equipment_id)
                if last is None:
                    continue  # never uploaded since the engine runs: nothing to measure from
                threshold_s = rule["for_s"] or silence_threshold_s(
                    uploads.get(equipment_id, []),
                    self.settings.alert_silence_min_s,
                    self.settings.alert_silence_cadence_factor,
                )
                if (now - last).total_seconds() <= threshold_s:
                    continue
                if in_window(store.maintenance_windows(cursor, equipment_id, now, now), now):
                    continue
                alert_id = str(uuid.uuid5(ALERT_NAMESPACE, f"{rule['id']}:{equipment_id}:silence:{_utc_text(last)}"))
                inserted = store.insert_alert(
                    cursor,
                    {
                        "id": alert_id,
                        "tenant_id": tenant_id,
                        "rule_id": rule["id"],
                        "type": "silence",
                        "severity": rule["severity"],
                        "equipment_id": equipment_id,
                        "state": "firing",
                        "started_at": last,
                        "trigger_value": threshold_s,
                        "learnt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                if inserted:
                    lifecycle.emit(cursor, alert_id, "fired")
                    report["fired"].append(alert_id)

    # --- Retention -------------------------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> int:
        """Deletes alerts resolved longer ago than the history kept, and old evaluation records; returns how many
        alerts."""
        now = now or self.clock()
        with self.db.transaction() as cursor:
            return store.prune(cursor, now - timedelta(days=self.settings.alert_history_days), now - EVALUATED_KEPT)
