"""Alert rules through the API: the body a user sends, its validation, and the tenant's rule store.

A body is checked whole before anything is looked up, and every problem is answered at once (422, each
with its path), so a script fixes its body in one round. Uuids then resolve to the tenant's equipment and
sensors; one the tenant does not have is a 422 naming the field too (the body is what is wrong; a 404 is
kept for the rule in the path). `sensor_type` takes either vocabulary of the client (Portuguese or
English) and is stored as easysmart.payload's English kind.

Rules from the client (`origin: client`, the default door rule of an equipment whose client sends
`equip_sirene_ativa`) are kept when deleted, disabled, so the next upload does not bring them back; a user's
edit stops them following the client (`user_edited`).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import psycopg2.extensions

from easysmart.alerting import lifecycle, store
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.db import Database, dict_rows, one_row
from easysmart.errors import NotFoundError, UnprocessableError
from easysmart.identity import Principal
from easysmart.params import (
    bad_parameter,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    iso,
    json_type_name,
    parse_limit,
    path_uuid,
)
from easysmart.payload import canonical_kind, unstorable_text

RULE_TYPES = ("threshold", "door_open", "silence", "battery_low")
SEVERITIES = ("warning", "critical")
DEFAULT_SEVERITY = "warning"
MAX_DURATION_S = 7 * 86400
# The tick is a minute: a shorter silence could not be seen in time.
MIN_SILENCE_S = 60
# Beyond any reading of the sensors this product watches: a bound this large is a typo, not a rule.
MAX_BOUND = 1e9
MAX_NAME_CHARS = 200
MAX_UUID_CHARS = 128
MAX_KIND_CHARS = 64
MAX_RULES_PER_TENANT = 10_000
MAX_RULE_BODY_BYTES = 16 * 1024
DEFAULT_RULES_PAGE = 100

_COMMON_FIELDS = ("type", "name", "severity", "enabled")
# The fields each type takes besides the common ones.
_TYPE_FIELDS = {
    "threshold": (
        "sensor_uuid",
        "equipment_uuid",
        "sensor_type",
        "above",
        "below",
        "hysteresis",
        "for_s",
        "resolve_for_s",
    ),
    "door_open": ("sensor_uuid", "equipment_uuid", "for_s"),
    "silence": ("equipment_uuid", "for_s"),
    "battery_low": ("sensor_uuid", "equipment_uuid", "below", "for_s"),
}
# Fields the API answers but a body cannot set: a rule read, edited and sent back is accepted.
_ANSWERED_ONLY = ("id", "origin", "user_edited", "created_at", "updated_at")


class RuleInvalidError(UnprocessableError):
    """A rule body that cannot be used: every problem with its path."""

    code = "invalid_rule"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        shown = "; ".join(f"{path}: {message}" for path, message in problems[:10])
        super().__init__(
            f"{len(problems)} problem(s) in the rule: {shown}",
            paths=[path for path, _ in problems],
            errors=[{"path": path, "message": message} for path, message in problems],
        )


@dataclass(frozen=True)
class RuleSpec:
    """A valid rule body, its uuids not yet resolved."""

    type: str
    severity: str = DEFAULT_SEVERITY
    name: str | None = None
    enabled: bool = True
    sensor_uuid: str | None = None
    equipment_uuid: str | None = None
    sensor_kind: str | None = None
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    for_s: int | None = None
    resolve_for_s: int = 0


class _Checker:
    """Reads fields of a body, noting every problem instead of stopping at the first."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def given(self, name: str) -> bool:
        # An explicit null is "not given": a rule read from the API carries nulls for what it does not set.
        return self.body.get(name) is not None

    def text(self, name: str, max_chars: int) -> str | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(name, f"must be a string, not {json_type_name(value)}")
            return None
        value = value.strip()
        if not value:
            self.problem(name, "must not be empty")
        elif len(value) > max_chars:
            self.problem(name, f"must be at most {max_chars} characters, not {len(value)}")
        elif unstorable_text(value):
            self.problem(name, "holds characters that cannot be stored (NUL or an unpaired surrogate)")
        else:
            return value
        return None

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.body.get(name)
        if value is None:
            return default
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, not {_shown(value)}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, not {json_type_name(value)}")
            return default
        return value

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.problem(name, f"must be a number, not {json_type_name(value)}")
            return None
        if not math.isfinite(value):
            self.problem(name, "must be a finite number")
            return None
        if not low <= value <= high:
            self.problem(name, f"must be between {low:g} and {high:g}, not {value:g}")
            return None
        return float(value)

    def duration(self, name: str, low: int) -> int | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(name, f"must be a whole number of seconds, not {json_type_name(value)}")
            return None
        if not low <= value <= MAX_DURATION_S:
            self.problem(name, f"must be between {low} and {MAX_DURATION_S} seconds (7 days), not {value}")
            return None
        return value


def parse_rule(body: object) -> RuleSpec:
    """The rule a body describes, or RuleInvalidError listing every problem with its path."""
    if not isinstance(body, dict):
        raise RuleInvalidError([("$", f"must be a JSON object, not {json_type_name(body)}")])
    check = _Checker(body)
    rule_type = body.get("type")
    if rule_type is None:
        raise RuleInvalidError([("type", f"is required: one of {', '.join(RULE_TYPES)}")])
    if rule_type not in RULE_TYPES:
        raise RuleInvalidError([("type", f"must be one of {', '.join(RULE_TYPES)}, not {_shown(rule_type)}")])
    allowed = set(_COMMON_FIELDS) | set(_TYPE_FIELDS[rule_type]) | set(_ANSWERED_ONLY)
    for name in body:
        if name not in allowed and body[name] is not None:
            check.problem(str(name)[:64], f"is not a field of a {rule_type} rule")
    common = {
        "severity": check.choice("severity", SEVERITIES, DEFAULT_SEVERITY),
        "name": check.text("name", MAX_NAME_CHARS),
        "enabled": check.boolean("enabled", True),
    }
    spec = _TYPE_PARSERS[rule_type](check, common)
    if check.problems:
        raise RuleInvalidError(check.problems)
    return spec


def _threshold(check: _Checker, common: dict) -> RuleSpec:
    sensor_uuid, equipment_uuid, kind = _scope(check, kind_allowed=True)
    if not any(check.given(name) for name in ("sensor_uuid", "equipment_uuid", "sensor_type")):
        check.problem("sensor_uuid", "a threshold rule needs sensor_uuid, or sensor_type (with equipment_uuid or not)")
    above = check.number("above", -MAX_BOUND, MAX_BOUND)
    below = check.number("below", -MAX_BOUND, MAX_BOUND)
    if check.given("above") == check.given("below"):
        check.problem("above", "give exactly one of above or below")
    return RuleSpec(
        "threshold",
        **common,
        sensor_uuid=sensor_uuid,
        equipment_uuid=equipment_uuid,
        sensor_kind=kind,
        above=above,
        below=below,
        hysteresis=check.number("hysteresis", 0, MAX_BOUND) or 0.0,
        for_s=check.duration("for_s", 0) or 0,
        resolve_for_s=check.duration("resolve_for_s", 0) or 0,
    )


def _door_open(check: _Checker, common: dict) -> RuleSpec:
    sensor_uuid, equipment_uuid, _ = _scope(check, kind_allowed=False)
    for_s = check.duration("for_s", 0)
    if not check.given("for_s"):
        check.problem("for_s", "is required: how long (seconds) a door may stay open")
    return RuleSpec(
        "door_open",
        **common,
        sensor_uuid=sensor_uuid,
        equipment_uuid=equipment_uuid,
        sensor_kind=None if sensor_uuid else "door",
        for_s=for_s,
    )


def _silence(check: _Checker, common: dict) -> RuleSpec:
    # No for_s: the equipment's own cadence decides (the engine's default).
    return RuleSpec(
        "silence",
        **common,
        equipment_uuid=check.text("equipment_uuid", MAX_UUID_CHARS),
        for_s=check.duration("for_s", MIN_SILENCE_S),
    )


def _battery_low(check: _Checker, common: dict) -> RuleSpec:
    sensor_uuid, equipment_uuid, _ = _scope(check, kind_allowed=False)
    below = check.number("below", 0, 100)
    if not check.given("below"):
        check.problem("below", "is required: the battery percentage (0 to 100) below which the rule fires")
    return RuleSpec(
        "battery_low",
        **common,
        sensor_uuid=sensor_uuid,
        equipment_uuid=equipment_uuid,
        below=below,
        for_s=check.duration("for_s", 0) or 0,
    )


_TYPE_PARSERS = {"threshold": _threshold, "door_open": _door_open, "silence": _silence, "battery_low": _battery_low}


def _scope(check: _Checker, kind_allowed: bool) -> tuple[str | None, str | None, str | None]:
    """(sensor_uuid, equipment_uuid, sensor kind): one sensor, or the sensors of a kind in an equipment or the
    tenant."""
    sensor_uuid = check.text("sensor_uuid", MAX_UUID_CHARS)
    equipment_uuid = check.text("equipment_uuid", MAX_UUID_CHARS)
    kind = None
    if kind_allowed:
        raw_kind = check.text("sensor_type", MAX_KIND_CHARS)
        kind = canonical_kind(raw_kind) if raw_kind else None
        if check.given("equipment_uuid") and not check.given("sensor_type") and not check.given("sensor_uuid"):
            check.problem("sensor_type", "is required with equipment_uuid: which of the equipment's sensors to watch")
    if check.given("sensor_uuid"):
        for name in ("equipment_uuid", "sensor_type") if kind_allowed else ("equipment_uuid",):
            if check.given(name):
                check.problem(name, "leave it out: sensor_uuid already names one sensor")
    return sensor_uuid, equipment_uuid, kind


def _shown(value: object) -> str:
    return repr(value[:32]) if isinstance(value, str) else json_type_name(value)


# The store


_RULE_SELECT = (
    "SELECT r.*, s.uuid AS sensor_uuid, e.uuid AS equipment_uuid FROM alert_rules r"
    " LEFT JOIN equipment e ON e.id = r.equipment_id LEFT JOIN sensors s ON s.id = r.sensor_id"
)


def rule_view(row: Mapping) -> dict:
    """A rule as the API answers it: the common fields and those of its type (null when not set). `row` maps
    the alert_rules columns plus `sensor_uuid` and `equipment_uuid` (_RULE_SELECT)."""
    fields = {**row, "sensor_type": row["sensor_kind"]}
    return {
        "id": str(row["id"]),
        **{name: row[name] for name in ("type", "origin", "severity", "name", "enabled", "user_edited")},
        **{name: fields[name] for name in _TYPE_FIELDS[row["type"]]},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class RuleStore:
    """The tenant's rules: listed and read by viewers, created, replaced and deleted by admins."""

    def __init__(self, db: Database, max_rules_per_tenant: int = MAX_RULES_PER_TENANT, clock: Clock = utc_now) -> None:
        self.db = db
        self.max_rules_per_tenant = max_rules_per_tenant
        self.clock = clock

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        """The tenant's rules (not deleted), oldest first, by keyset pages; `type` filters."""
        require_role(principal, Role.VIEWER)
        limit = parse_limit(args.get("limit"), DEFAULT_RULES_PAGE)
        after = decode_cursor(args.get("cursor"), "rules", (str, str))
        params: dict = {"tenant": principal.tenant_id, "limit": limit + 1}
        where = ["r.tenant_id = %(tenant)s", "r.deleted_at IS NULL"]
        if args.get("type"):
            if args["type"] not in RULE_TYPES:
                raise bad_parameter("type", f"must be one of {', '.join(RULE_TYPES)}")
            where.append("r.type = %(type)s")
            params["type"] = args["type"]
        if after:
            where.append("(r.created_at, r.id) > (%(after_time)s, %(after_id)s::uuid)")
            params.update(after_time=after[0], after_id=cursor_uuid(after[1]))
        with self.db.transaction() as cursor:
            cursor.execute(
                f"{_RULE_SELECT} WHERE {' AND '.join(where)} ORDER BY r.created_at, r.id LIMIT %(limit)s", params
            )
            rows = dict_rows(cursor)
        page, more = rows[:limit], len(rows) > limit
        return {
            "rules": [rule_view(row) for row in page],
            "next_cursor": encode_cursor("rules", iso(page[-1]["created_at"]), str(page[-1]["id"])) if more else None,
        }

    def get(self, principal: Principal, rule_id: str) -> dict:
        require_role(principal, Role.VIEWER)
        with self.db.transaction() as cursor:
            return rule_view(self._row(cursor, principal.tenant_id, path_uuid("rule", rule_id)))

    def create(self, principal: Principal, body: object) -> dict:
        require_role(principal, Role.ADMIN)
        spec = parse_rule(body)
        rule_id = str(uuid.uuid4())
        now = self.clock()
        with self.db.transaction() as cursor:
            # One writer at a time per tenant, so concurrent creations cannot pass the bound together.
            store.lock_tenant(cursor, principal.tenant_id)
            cursor.execute(
                "SELECT count(*) FROM alert_rules WHERE tenant_id = %s AND deleted_at IS NULL", (principal.tenant_id,)
            )
            (count,) = one_row(cursor)
            if count >= self.max_rules_per_tenant:
                raise UnprocessableError(
                    f"the tenant has {self.max_rules_per_tenant} rules, the most it may have; delete some first",
                    paths=["$"],
                    errors=[{"path": "$", "message": "too many rules in the tenant"}],
                )
            equipment_id, sensor_id = _resolve(cursor, principal.tenant_id, spec)
            cursor.execute(
                "INSERT INTO alert_rules (id, tenant_id, type, origin, severity, name, equipment_id, sensor_id,"
                " sensor_kind, above, below, hysteresis, for_s, resolve_for_s, enabled, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'user', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (rule_id, principal.tenant_id, spec.type, *_stored_fields(spec, equipment_id, sensor_id), now, now),
            )
            return rule_view(self._row(cursor, principal.tenant_id, rule_id))

    def replace(self, principal: Principal, rule_id: str, body: object) -> dict:
        """PUT: the rule becomes the body. A client rule so edited stops following the client. Disabled, or
        watching something else, its open alerts end now."""
        require_role(principal, Role.ADMIN)
        rule_id = path_uuid("rule", rule_id)
        spec = parse_rule(body)
        now = self.clock()
        with self.db.transaction() as cursor:
            # The engine's lock first, as the engine takes it before touching rules: no deadlock with it.
            store.lock_tenant(cursor, principal.tenant_id)
            current = self._row(cursor, principal.tenant_id, rule_id, lock=True)
            equipment_id, sensor_id = _resolve(cursor, principal.tenant_id, spec)
            if current["origin"] == "client":
                _check_client_rule_kept(spec, current)
            cursor.execute(
                "UPDATE alert_rules SET type = %s, severity = %s, name = %s, equipment_id = %s, sensor_id = %s,"
                " sensor_kind = %s, above = %s, below = %s, hysteresis = %s, for_s = %s, resolve_for_s = %s,"
                " enabled = %s, user_edited = (origin = 'client'), updated_at = %s WHERE id = %s",
                (spec.type, *_stored_fields(spec, equipment_id, sensor_id), now, rule_id),
            )
            watched = (current["type"], current["sensor_uuid"], current["equipment_uuid"], current["sensor_kind"])
            if not spec.enabled or watched != (spec.type, spec.sensor_uuid, spec.equipment_uuid, spec.sensor_kind):
                _end_open_alerts(cursor, rule_id, now)
            return rule_view(self._row(cursor, principal.tenant_id, rule_id))

    def delete(self, principal: Principal, rule_id: str) -> None:
        """A user's rule is marked deleted (its alerts keep their rule_id); a client's stays, disabled and
        edited, so the client's next upload does not bring it back. Its open alerts end now."""
        require_role(principal, Role.ADMIN)
        rule_id = path_uuid("rule", rule_id)
        now = self.clock()
        with self.db.transaction() as cursor:
            store.lock_tenant(cursor, principal.tenant_id)
            self._row(cursor, principal.tenant_id, rule_id, lock=True)
            cursor.execute(
                "UPDATE alert_rules SET deleted_at = %(now)s, updated_at = %(now)s,"
                " enabled = CASE WHEN origin = 'client' THEN false ELSE enabled END,"
                " user_edited = user_edited OR origin = 'client' WHERE id = %(id)s",
                {"now": now, "id": rule_id},
            )
            _end_open_alerts(cursor, rule_id, now)

    def _row(self, cursor: psycopg2.extensions.cursor, tenant_id: str, rule_id: str, lock: bool = False) -> dict:
        cursor.execute(
            f"{_RULE_SELECT} WHERE r.tenant_id = %s AND r.id = %s AND r.deleted_at IS NULL"
            + (" FOR UPDATE OF r" if lock else ""),
            (tenant_id, rule_id),
        )
        rows = dict_rows(cursor)
        if not rows:
            raise NotFoundError(f"rule {rule_id} not found")
        return rows[0]


def _stored_fields(spec: RuleSpec, equipment_id: int | None, sensor_id: int | None) -> tuple:
    """The columns a rule body sets, in the order of INSERT and UPDATE: severity .. enabled."""
    return (
        spec.severity,
        spec.name,
        equipment_id,
        sensor_id,
        spec.sensor_kind,
        spec.above,
        spec.below,
        spec.hysteresis,
        spec.for_s,
        spec.resolve_for_s,
        spec.enabled,
    )


def _resolve(cursor: psycopg2.extensions.cursor, tenant_id: str, spec: RuleSpec) -> tuple[int | None, int | None]:
    """(equipment id, sensor id) of the spec's uuids in the tenant; 422 naming the field of one it does not have."""
    problems = []
    equipment_id = sensor_id = None
    if spec.sensor_uuid is not None:
        sensor_id = store.id_by_uuid(cursor, "sensors", tenant_id, spec.sensor_uuid)
        if sensor_id is None:
            problems.append(("sensor_uuid", f"the tenant has no sensor {spec.sensor_uuid!r}"))
    if spec.equipment_uuid is not None:
        equipment_id = store.id_by_uuid(cursor, "equipment", tenant_id, spec.equipment_uuid)
        if equipment_id is None:
            problems.append(("equipment_uuid", f"the tenant has no equipment {spec.equipment_uuid!r}"))
    if problems:
        raise RuleInvalidError(problems)
    return equipment_id, sensor_id


def _end_open_alerts(cursor: psycopg2.extensions.cursor, rule_id: str, now: datetime) -> None:
    """A rule deleted, disabled or set to watch something else no longer evaluates what its open alerts are
    about, so nothing would ever resolve them: they end now, each with its `resolved` event (notify then stops
    reminding of them)."""
    cursor.execute(
        "SELECT id, peak_value FROM alerts WHERE rule_id = %s AND state <> 'resolved' FOR UPDATE", (rule_id,)
    )
    for alert_id, peak_value in cursor.fetchall():
        store.resolve_alert(cursor, str(alert_id), now, peak_value, 0, now)
        lifecycle.emit(cursor, str(alert_id), "resolved")


def _check_client_rule_kept(spec: RuleSpec, current: Mapping) -> None:
    """A client rule may change its duration, severity, name and whether it is enabled, not what it watches."""
    problems = []
    if spec.type != "door_open":
        problems.append(("type", "a rule from the client stays a door_open rule; create a rule of your own instead"))
    elif spec.equipment_uuid != current["equipment_uuid"] or spec.sensor_uuid is not None:
        problems.append(
            ("equipment_uuid", f"a rule from the client stays on its equipment {current['equipment_uuid']!r}")
        )
    if problems:
        raise RuleInvalidError(problems)
