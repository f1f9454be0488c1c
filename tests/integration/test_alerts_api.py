"""The alerts function's API and CloudEvent entry, as functions-framework serves it, in process, against the real
PostgreSQL and Redis: rules (CRUD, validation with paths, client rules), alerts (filters, keyset pages,
acknowledgement, snooze), maintenance windows, roles and device tokens, tenant isolation, and open_alerts in the
Home Assistant view. Alerts
are written as the engine writes them (rows in `alerts`), so these tests hold the API, not the evaluation."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from functions_framework import create_app

from easysmart import accounts
from easysmart.alerting.rules import MAX_RULE_BODY_BYTES
from easysmart.bridges.ping_source import ping_headers
from easysmart.errors import UnavailableError
from easysmart.events import to_http
from easysmart.identity import Principal, TokenService
from easysmart.outbox import ALERT_ACKNOWLEDGED_TYPE, ALERT_RESOLVED_TYPE, TELEMETRY_STORED_TYPE

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def functions(database_url, redis_url, token_settings, monkeypatch):
    """The test clients of alerts and analytics, and the alerts function's module (to give it a fake engine)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    alerts = create_app(target="handle", source=str(FUNCTIONS / "alerts" / "main.py")).test_client()
    module = sys.modules["main"]
    analytics = create_app(target="handle", source=str(FUNCTIONS / "analytics" / "main.py")).test_client()
    return alerts, analytics, module


@dataclass
class Tenant:
    tenant_id: str
    user: dict  # Authorization headers
    device: dict
    viewer: dict  # the user's account, with a token of the viewer role
    user_account_id: str
    equipment_uuid: str
    equipment_id: int
    temperature_uuid: str
    temperature_id: int
    door_uuid: str
    door_id: int


@pytest.fixture
def make_tenant(database, token_settings):
    """make_tenant() -> a fresh tenant with a user, a device, and a freezer with a temperature and a door sensor;
    its rules, alerts, events, sensors and equipment are removed afterwards."""
    tokens = TokenService(token_settings)
    made: list[Tenant] = []

    def make() -> Tenant:
        suffix = uuid.uuid4().hex[:12]
        name = f"it-alerts-{suffix}"
        with database.transaction() as cursor:
            tenant_id = accounts.create_tenant(cursor, name, "America/Sao_Paulo")
            user_id = accounts.create_account(cursor, name, "user", f"it-user-{suffix}", f"pw-{suffix}")
            device_id = accounts.create_account(cursor, name, "device", f"it-device-{suffix}", f"pw-{suffix}")
            cursor.execute(
                "INSERT INTO equipment (tenant_id, uuid, name) VALUES (%s, %s, 'Freezer') RETURNING id",
                (tenant_id, f"freezer-{suffix}"),
            )
            equipment_id = cursor.fetchone()[0]
            sensor_ids = []
            for kind in ("temperature", "door"):
                cursor.execute(
                    "INSERT INTO sensors (tenant_id, equipment_id, uuid, kind) VALUES (%s, %s, %s, %s) RETURNING id",
                    (tenant_id, equipment_id, f"{kind}-{suffix}", kind),
                )
                sensor_ids.append(cursor.fetchone()[0])
        tenant = Tenant(
            tenant_id,
            _bearer(tokens, Principal(user_id, tenant_id, "user")),
            _bearer(tokens, Principal(device_id, tenant_id, "device")),
            _bearer(tokens, Principal(user_id, tenant_id, "user", role="viewer")),
            user_id,
            f"freezer-{suffix}",
            equipment_id,
            f"temperature-{suffix}",
            sensor_ids[0],
            f"door-{suffix}",
            sensor_ids[1],
        )
        made.append(tenant)
        return tenant

    yield make
    with database.transaction() as cursor:
        for tenant in made:
            cursor.execute("DELETE FROM event_outbox WHERE data->>'tenant_id' = %s", (tenant.tenant_id,))
            tables = ("alerts", "maintenance_windows", "alert_rules", "sensors", "equipment", "audit_log", "accounts")
            for table in (*tables, "tenants"):
                column = "id" if table == "tenants" else "tenant_id"
                cursor.execute(f"DELETE FROM {table} WHERE {column} = %s", (tenant.tenant_id,))


def _bearer(tokens: TokenService, principal: Principal) -> dict:
    return {"Authorization": f"Bearer {tokens.access_token(principal)}"}


def add_alert(
    database, tenant: Tenant, started_at: datetime, state: str = "firing", severity: str = "critical", door=False
) -> str:
    """An alert as the engine writes it, under a rule of its own."""
    rule_id, alert_id = str(uuid.uuid4()), str(uuid.uuid4())
    sensor_id = tenant.door_id if door else tenant.temperature_id
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO alert_rules (id, tenant_id, type, severity, sensor_id, above, for_s)"
            " VALUES (%s, %s, 'threshold', %s, %s, -15, 600)",
            (rule_id, tenant.tenant_id, severity, sensor_id),
        )
        cursor.execute(
            "INSERT INTO alerts (id, tenant_id, rule_id, type, severity, equipment_id, sensor_id, state, started_at,"
            " ended_at, trigger_value, peak_value) VALUES (%s, %s, %s, 'threshold', %s, %s, %s, %s, %s, %s, -14, -9)",
            (
                alert_id,
                tenant.tenant_id,
                rule_id,
                severity,
                tenant.equipment_id,
                sensor_id,
                state,
                started_at,
                started_at + timedelta(minutes=30) if state == "resolved" else None,
            ),
        )
    return alert_id


def freezer_rule(tenant: Tenant, **changes) -> dict:
    return {
        "type": "threshold",
        "sensor_uuid": tenant.temperature_uuid,
        "above": -15.0,
        "for_s": 600,
        "severity": "critical",
        **changes,
    }


# --- rules ---------------------------------------------------------------------------------------


def test_a_rule_is_created_read_listed_replaced_and_deleted(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()

    created = alerts.post("/api/v1/alerts/rules", json=freezer_rule(tenant, name="Freezer warm"), headers=tenant.user)
    rule_id = created.get_json()["id"]
    read = alerts.get(f"/api/v1/alerts/rules/{rule_id}", headers=tenant.user)
    replaced = alerts.put(
        f"/api/v1/alerts/rules/{rule_id}", json=freezer_rule(tenant, above=-12.5, for_s=300), headers=tenant.user
    )
    listed = alerts.get("/api/v1/alerts/rules", headers=tenant.user).get_json()["rules"]
    deleted = alerts.delete(f"/api/v1/alerts/rules/{rule_id}", headers=tenant.user)

    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json() | {"created_at": None, "updated_at": None} == {
        "id": rule_id,
        "type": "threshold",
        "origin": "user",
        "severity": "critical",
        "name": "Freezer warm",
        "enabled": True,
        "user_edited": False,
        "sensor_uuid": tenant.temperature_uuid,
        "equipment_uuid": None,
        "sensor_type": None,
        "above": -15.0,
        "below": None,
        "hysteresis": 0.0,
        "for_s": 600,
        "resolve_for_s": 0,
        "created_at": None,
        "updated_at": None,
    }
    assert read.get_json() == created.get_json()
    assert replaced.status_code == 200 and (replaced.get_json()["above"], replaced.get_json()["for_s"]) == (-12.5, 300)
    assert replaced.get_json()["name"] is None and replaced.get_json()["user_edited"] is False  # PUT replaces whole
    assert [rule["id"] for rule in listed] == [rule_id]
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert alerts.get(f"/api/v1/alerts/rules/{rule_id}", headers=tenant.user).status_code == 404
    assert alerts.get("/api/v1/alerts/rules", headers=tenant.user).get_json()["rules"] == []
    with database.transaction() as cursor:
        cursor.execute("SELECT enabled, deleted_at IS NOT NULL FROM alert_rules WHERE id = %s", (rule_id,))
        assert cursor.fetchone() == (True, True)  # kept, for the alerts that name it


def test_scopes_resolve_to_the_tenants_equipment_and_sensor_type_is_stored_in_english(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    bodies = [
        {"type": "threshold", "equipment_uuid": tenant.equipment_uuid, "sensor_type": "Temperatura", "below": -30},
        {"type": "threshold", "sensor_type": "umidade", "above": 90},
        {"type": "door_open", "equipment_uuid": tenant.equipment_uuid, "for_s": 120},
        {"type": "silence", "equipment_uuid": tenant.equipment_uuid, "for_s": 900},
        {"type": "battery_low", "below": 20},
    ]

    answers = [alerts.post("/api/v1/alerts/rules", json=body, headers=tenant.user) for body in bodies]

    assert [answer.status_code for answer in answers] == [201] * 5, [a.get_json() for a in answers]
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT type, equipment_id, sensor_id, sensor_kind, for_s FROM alert_rules WHERE tenant_id = %s",
            (tenant.tenant_id,),
        )
        rows = set(cursor.fetchall())
    assert rows == {
        ("threshold", tenant.equipment_id, None, "temperature", 0),
        ("threshold", None, None, "humidity", 0),
        ("door_open", tenant.equipment_id, None, "door", 120),
        ("silence", tenant.equipment_id, None, None, 900),
        ("battery_low", None, None, None, 0),
    }
    assert answers[0].get_json()["sensor_type"] == "temperature"


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"type": "threshold", "above": -15}, ["sensor_uuid"]),
        ({"type": "threshold", "sensor_uuid": "x", "above": -15, "below": -20}, ["above"]),
        (
            {"type": "threshold", "sensor_uuid": "x", "above": "warm", "for_s": -1, "colour": 1},
            ["colour", "above", "for_s"],
        ),
        ({"type": "door_open", "for_s": 8 * 86400}, ["for_s"]),
        ({"type": "nope"}, ["type"]),
        ([1, 2], ["$"]),
    ],
)
def test_a_bad_rule_is_422_with_the_paths_of_every_problem(functions, make_tenant, body, paths):
    alerts, _, _ = functions
    tenant = make_tenant()

    answer = alerts.post("/api/v1/alerts/rules", json=body, headers=tenant.user)

    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["paths"] == paths
    assert [error["path"] for error in answer.get_json()["errors"]] == paths


def test_uuids_the_tenant_does_not_have_are_422_naming_the_field_even_another_tenants(functions, make_tenant):
    alerts, _, _ = functions
    tenant, other = make_tenant(), make_tenant()

    unknown = alerts.post(
        "/api/v1/alerts/rules", json=freezer_rule(tenant, sensor_uuid="no-such-sensor"), headers=tenant.user
    )
    foreign = alerts.post(
        "/api/v1/alerts/rules",
        json={"type": "door_open", "equipment_uuid": other.equipment_uuid, "for_s": 60},
        headers=tenant.user,
    )

    assert (unknown.status_code, unknown.get_json()["paths"]) == (422, ["sensor_uuid"])
    assert (foreign.status_code, foreign.get_json()["paths"]) == (422, ["equipment_uuid"])


def test_bodies_that_are_not_json_or_too_large_are_refused_before_validation(functions, make_tenant):
    alerts, _, _ = functions
    tenant = make_tenant()
    headers = {**tenant.user, "Content-Type": "application/json"}

    not_json = alerts.post("/api/v1/alerts/rules", data=b'{"type": NaN}', headers=headers)
    too_large = alerts.post(
        "/api/v1/alerts/rules", data=b'{"name": "' + b"x" * MAX_RULE_BODY_BYTES + b'"}', headers=headers
    )
    empty = alerts.post("/api/v1/alerts/rules", data=b"", headers=headers)

    assert (not_json.status_code, too_large.status_code, empty.status_code) == (400, 413, 400)


def test_the_tenants_rule_count_is_bounded(functions, make_tenant, database):
    alerts, _, module = functions
    tenant = make_tenant()
    module._api()[0].max_rules_per_tenant = 2
    try:
        answers = [
            alerts.post("/api/v1/alerts/rules", json={"type": "silence"}, headers=tenant.user).status_code
            for _ in range(3)
        ]
    finally:
        module._api.cache_clear()

    assert answers == [201, 201, 422]


def test_a_client_rule_edited_stops_following_the_client_and_deleted_stays_disabled(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    rule_id = str(uuid.uuid4())
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO alert_rules (id, tenant_id, type, origin, severity, equipment_id, sensor_kind, for_s)"
            " VALUES (%s, %s, 'door_open', 'client', 'warning', %s, 'door', 300)",
            (rule_id, tenant.tenant_id, tenant.equipment_id),
        )
    read = alerts.get(f"/api/v1/alerts/rules/{rule_id}", headers=tenant.user).get_json()

    edited = alerts.put(f"/api/v1/alerts/rules/{rule_id}", json={**read, "for_s": 600}, headers=tenant.user)
    retyped = alerts.put(f"/api/v1/alerts/rules/{rule_id}", json={"type": "silence", "for_s": 600}, headers=tenant.user)
    deleted = alerts.delete(f"/api/v1/alerts/rules/{rule_id}", headers=tenant.user)

    assert read["origin"] == "client" and read["equipment_uuid"] == tenant.equipment_uuid
    assert edited.status_code == 200, edited.get_json()
    assert (edited.get_json()["for_s"], edited.get_json()["user_edited"]) == (600, True)
    assert (retyped.status_code, retyped.get_json()["paths"]) == (422, ["type"])
    assert deleted.status_code == 204
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT enabled, user_edited, deleted_at IS NOT NULL, for_s FROM alert_rules WHERE id = %s", (rule_id,)
        )
        assert cursor.fetchone() == (False, True, True, 600)


def test_a_rule_deleted_or_disabled_ends_its_open_alerts_with_their_resolved_events(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    rules = [
        alerts.post("/api/v1/alerts/rules", json=freezer_rule(tenant), headers=tenant.user).get_json() for _ in range(3)
    ]
    opened = {}
    for rule in rules:
        opened[rule["id"]] = add_alert(database, tenant, T0)
        with database.transaction() as cursor:
            cursor.execute("UPDATE alerts SET rule_id = %s WHERE id = %s", (rule["id"], opened[rule["id"]]))
    deleted, disabled, edited = rules

    alerts.delete(f"/api/v1/alerts/rules/{deleted['id']}", headers=tenant.user)
    alerts.put(f"/api/v1/alerts/rules/{disabled['id']}", json={**disabled, "enabled": False}, headers=tenant.user)
    alerts.put(f"/api/v1/alerts/rules/{edited['id']}", json={**edited, "above": -10.0}, headers=tenant.user)

    with database.transaction() as cursor:
        cursor.execute(
            "SELECT a.rule_id::text, a.state, a.ended_at IS NOT NULL, count(o.id) FROM alerts a"
            " LEFT JOIN event_outbox o ON o.subject = a.id::text AND o.type = %s"
            " WHERE a.tenant_id = %s GROUP BY a.id",
            (ALERT_RESOLVED_TYPE, tenant.tenant_id),
        )
        ended = {row[0]: row[1:] for row in cursor.fetchall()}
    assert ended == {
        deleted["id"]: ("resolved", True, 1),
        disabled["id"]: ("resolved", True, 1),
        edited["id"]: ("firing", False, 0),  # the same sensor, a new bound: the engine carries it on
    }


def test_rules_are_paged_by_keyset(functions, make_tenant):
    alerts, _, _ = functions
    tenant = make_tenant()
    made = [
        alerts.post("/api/v1/alerts/rules", json={"type": "battery_low", "below": n}, headers=tenant.user).get_json()[
            "id"
        ]
        for n in (10, 20, 30)
    ]

    first = alerts.get("/api/v1/alerts/rules?limit=2", headers=tenant.user).get_json()
    second = alerts.get(f"/api/v1/alerts/rules?limit=2&cursor={first['next_cursor']}", headers=tenant.user).get_json()
    foreign_cursor = alerts.get("/api/v1/alerts?cursor=" + first["next_cursor"], headers=tenant.user)

    assert [rule["id"] for rule in first["rules"] + second["rules"]] == made
    assert second["next_cursor"] is None
    assert (foreign_cursor.status_code, foreign_cursor.get_json()["parameter"]) == (400, "cursor")


# --- alerts --------------------------------------------------------------------------------------


def test_alerts_are_listed_newest_first_with_the_agreed_fields_and_paged_by_keyset(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    # Two start at the same time: the keyset's tie-break on the id must neither skip nor repeat one.
    starts = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)]
    ids = [add_alert(database, tenant, start) for start in starts]

    seen, cursor = [], ""
    for _ in range(5):
        page = alerts.get(f"/api/v1/alerts?limit=2{cursor}", headers=tenant.user).get_json()
        seen += page["alerts"]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"

    expected = [ids[4], ids[3], *sorted(ids[1:3]), ids[0]]
    assert [alert["id"] for alert in seen] == expected
    assert {
        "id",
        "rule_id",
        "type",
        "state",
        "equipment_uuid",
        "sensor_uuid",
        "started_at",
        "ended_at",
        "trigger_value",
        "peak_value",
        "late",
    } <= set(seen[0])
    assert (seen[0]["equipment_uuid"], seen[0]["sensor_uuid"], seen[0]["trigger_value"]) == (
        tenant.equipment_uuid,
        tenant.temperature_uuid,
        -14.0,
    )


def test_alerts_are_filtered_by_state_severity_equipment_sensor_and_window(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    resolved = add_alert(database, tenant, T0, state="resolved")  # open from T0 to T0 + 30 min
    firing = add_alert(database, tenant, T0 + timedelta(hours=2), severity="warning")
    door = add_alert(database, tenant, T0 + timedelta(hours=3), state="acknowledged", door=True)

    def ids(query: str) -> set[str]:
        answer = alerts.get(f"/api/v1/alerts?{query}", headers=tenant.user)
        assert answer.status_code == 200, answer.get_json()
        return {alert["id"] for alert in answer.get_json()["alerts"]}

    assert ids("state=open") == {firing, door}
    assert ids("state=resolved") == {resolved}
    assert ids("severity=warning") == {firing}
    assert ids(f"equipment_uuid={tenant.equipment_uuid}") == {resolved, firing, door}
    assert ids(f"sensor_uuid={tenant.door_uuid}") == {door}
    assert ids("start_date=2026-11-30T12:20:00Z&end_date=2026-11-30T14:30:00Z") == {resolved, firing}
    assert ids("start_date=2026-11-30T12:40:00Z&end_date=2026-11-30T14:00:00Z") == set()
    bad = alerts.get("/api/v1/alerts?state=burning", headers=tenant.user)
    assert (bad.status_code, bad.get_json()["parameter"]) == (400, "state")


def test_an_acknowledgement_records_who_when_and_the_comment_once(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    alert_id = add_alert(database, tenant, T0)

    acked = alerts.post(
        f"/api/v1/alerts/{alert_id}/ack", json={"comment": "door was left open; closed it"}, headers=tenant.user
    )
    again = alerts.post(f"/api/v1/alerts/{alert_id}/ack", headers=tenant.user)
    too_long = alerts.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "x" * 2001}, headers=tenant.user)

    assert acked.status_code == 200, acked.get_json()
    body = acked.get_json()
    assert (body["state"], body["acknowledged_by"], body["ack_comment"]) == (
        "acknowledged",
        tenant.user_account_id,
        "door was left open; closed it",
    )
    assert again.status_code == 200 and again.get_json() == body
    assert (too_long.status_code, too_long.get_json()["parameter"]) == (400, "comment")
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT count(*) FROM event_outbox WHERE type = %s AND subject = %s", (ALERT_ACKNOWLEDGED_TYPE, alert_id)
        )
        assert cursor.fetchone()[0] == 1


def test_another_tenants_rules_and_alerts_are_404_and_never_listed(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant, other = make_tenant(), make_tenant()
    foreign_rule = alerts.post("/api/v1/alerts/rules", json=freezer_rule(other), headers=other.user).get_json()["id"]
    foreign_alert = add_alert(database, other, T0)

    answers = [
        alerts.get(f"/api/v1/alerts/rules/{foreign_rule}", headers=tenant.user),
        alerts.put(f"/api/v1/alerts/rules/{foreign_rule}", json=freezer_rule(tenant), headers=tenant.user),
        alerts.delete(f"/api/v1/alerts/rules/{foreign_rule}", headers=tenant.user),
        alerts.post(f"/api/v1/alerts/{foreign_alert}/ack", headers=tenant.user),
        alerts.get(f"/api/v1/alerts?equipment_uuid={other.equipment_uuid}", headers=tenant.user),
        alerts.get("/api/v1/alerts/rules/not-a-uuid", headers=tenant.user),
    ]

    assert [answer.status_code for answer in answers] == [404] * 6
    assert alerts.get("/api/v1/alerts/rules", headers=tenant.user).get_json()["rules"] == []
    assert alerts.get("/api/v1/alerts", headers=tenant.user).get_json()["alerts"] == []
    with database.transaction() as cursor:
        cursor.execute("SELECT deleted_at FROM alert_rules WHERE id = %s", (foreign_rule,))
        assert cursor.fetchone() == (None,)
        cursor.execute("SELECT state FROM alerts WHERE id = %s", (foreign_alert,))
        assert cursor.fetchone() == ("firing",)


def test_device_tokens_are_403_on_rules_the_alerts_list_and_acknowledgement(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    alert_id = add_alert(database, tenant, T0)

    answers = [
        alerts.get("/api/v1/alerts/rules", headers=tenant.device),
        alerts.post("/api/v1/alerts/rules", json=freezer_rule(tenant), headers=tenant.device),
        alerts.get("/api/v1/alerts", headers=tenant.device),
        alerts.post(f"/api/v1/alerts/{alert_id}/ack", headers=tenant.device),
        alerts.get("/api/v1/alerts", headers={"Authorization": "Bearer nonsense"}),
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 403, 403, 401]


def test_a_snooze_is_set_and_lifted_by_viewers_and_is_409_on_a_resolved_alert(functions, make_tenant, database):
    alerts, _, _ = functions
    tenant = make_tenant()
    open_id, resolved_id = add_alert(database, tenant, T0), add_alert(database, tenant, T0, state="resolved")

    snoozed = alerts.post(f"/api/v1/alerts/{open_id}/snooze", json={"for_s": 600}, headers=tenant.viewer)
    lifted = alerts.post(f"/api/v1/alerts/{open_id}/snooze", json={"until": None}, headers=tenant.user)
    answers = [
        alerts.post(f"/api/v1/alerts/{resolved_id}/snooze", json={"for_s": 600}, headers=tenant.user),
        alerts.post(f"/api/v1/alerts/{open_id}/snooze", json={"for_s": 600}, headers=tenant.device),
        alerts.post(f"/api/v1/alerts/{open_id}/snooze", headers=tenant.user),
        alerts.post(f"/api/v1/alerts/{open_id}/snooze", data=b"{" + b" " * 2000 + b"}", headers=tenant.user),
        alerts.post(f"/api/v1/alerts/{uuid.uuid4()}/snooze", json={"for_s": 600}, headers=tenant.user),
    ]

    assert snoozed.status_code == 200, snoozed.get_json()
    until = datetime.fromisoformat(snoozed.get_json()["snoozed_until"])
    assert timedelta(seconds=590) < until - datetime.now(timezone.utc) <= timedelta(seconds=600)
    assert (lifted.status_code, lifted.get_json()["snoozed_until"]) == (200, None)
    assert [answer.status_code for answer in answers] == [409, 403, 400, 413, 404]


def window_body(tenant: Tenant, starts_in: timedelta, lasts: timedelta, **changes) -> dict:
    starts_at = datetime.now(timezone.utc) + starts_in
    return {
        "equipment_uuid": tenant.equipment_uuid,
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + lasts).isoformat(),
        **changes,
    }


def test_maintenance_windows_are_made_and_deleted_by_admins_listed_by_viewers_and_paged(functions, make_tenant):
    alerts, _, _ = functions
    tenant, other = make_tenant(), make_tenant()
    made = []
    for days in (1, 3, 2):
        answer = alerts.post(
            "/api/v1/alerts/maintenance",
            json=window_body(tenant, timedelta(days=days), timedelta(hours=1), reason=f"degelo {days}"),
            headers=tenant.user,
        )
        assert answer.status_code == 201, answer.get_json()
        made.append(answer.get_json())

    first = alerts.get("/api/v1/alerts/maintenance?limit=2", headers=tenant.viewer).get_json()
    rest = alerts.get(f"/api/v1/alerts/maintenance?cursor={first['next_cursor']}", headers=tenant.viewer).get_json()
    in_window = alerts.get(
        "/api/v1/alerts/maintenance",
        query_string={"start_date": made[2]["starts_at"], "end_date": made[2]["ends_at"]},
        headers=tenant.viewer,
    ).get_json()

    assert [w["reason"] for w in first["windows"] + rest["windows"]] == ["degelo 3", "degelo 2", "degelo 1"]
    assert rest["next_cursor"] is None
    assert in_window["windows"] == [made[2]]
    assert made[0]["created_by"] == tenant.user_account_id and made[0]["equipment_uuid"] == tenant.equipment_uuid
    window_id = made[0]["id"]
    answers = [
        alerts.post(
            "/api/v1/alerts/maintenance", json=window_body(tenant, timedelta(0), timedelta(1)), headers=tenant.viewer
        ),
        alerts.delete(f"/api/v1/alerts/maintenance/{window_id}", headers=tenant.viewer),
        alerts.get("/api/v1/alerts/maintenance", headers=tenant.device),
        alerts.delete(f"/api/v1/alerts/maintenance/{window_id}", headers=other.user),
        alerts.delete("/api/v1/alerts/maintenance/not-a-uuid", headers=tenant.user),
        alerts.delete(f"/api/v1/alerts/maintenance/{window_id}", headers=tenant.user),
        alerts.delete(f"/api/v1/alerts/maintenance/{window_id}", headers=tenant.user),
    ]
    assert [answer.status_code for answer in answers] == [403, 403, 403, 404, 404, 204, 404]
    assert alerts.get("/api/v1/alerts/maintenance", headers=other.user).get_json()["windows"] == []


def test_a_window_names_the_tenants_own_equipment_and_an_equipment_has_a_bounded_number_pending(
    functions, make_tenant, database, monkeypatch
):
    alerts, _, _ = functions
    tenant, other = make_tenant(), make_tenant()
    theirs = alerts.post(
        "/api/v1/alerts/maintenance",
        json=window_body(tenant, timedelta(hours=1), timedelta(hours=1), equipment_uuid=other.equipment_uuid),
        headers=tenant.user,
    )
    assert (theirs.status_code, theirs.get_json()["paths"]) == (422, ["$.equipment_uuid"])
    monkeypatch.setattr("easysmart.alerting.maintenance.MAX_PENDING_PER_EQUIPMENT", 2)
    now = datetime.now(timezone.utc)
    with database.transaction() as cursor:  # one ended window, which does not count
        cursor.execute(
            "INSERT INTO maintenance_windows (id, tenant_id, equipment_id, starts_at, ends_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (
                str(uuid.uuid4()),
                tenant.tenant_id,
                tenant.equipment_id,
                now - timedelta(days=2),
                now - timedelta(days=1),
            ),
        )
    answers = [
        alerts.post(
            "/api/v1/alerts/maintenance",
            json=window_body(tenant, timedelta(hours=h), timedelta(hours=1)),
            headers=tenant.user,
        )
        for h in (1, 2, 3)
    ]

    assert [answer.status_code for answer in answers] == [201, 201, 422]
    assert "2 maintenance windows not yet ended" in answers[2].get_json()["message"]


def test_the_home_assistant_view_carries_the_equipments_open_alerts(functions, make_tenant, database):
    _, analytics, _ = functions
    tenant = make_tenant()
    add_alert(database, tenant, T0, state="resolved")
    firing = add_alert(database, tenant, T0 + timedelta(hours=1))
    acknowledged = add_alert(database, tenant, T0 + timedelta(hours=2), state="acknowledged", door=True)

    answer = analytics.get(f"/api/v1/analytics/home-assistant/{tenant.equipment_uuid}", headers=tenant.device)

    assert answer.status_code == 200, answer.get_json()
    assert [alert["id"] for alert in answer.get_json()["open_alerts"]] == [acknowledged, firing]
    assert answer.get_json()["open_alerts"][0]["sensor_uuid"] == tenant.door_uuid


# --- the CloudEvent entry ------------------------------------------------------------------------


class FakeEngine:
    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.received: list[object] = []

    def on_stored(self, data: dict) -> dict:
        if self.failure:
            raise self.failure
        self.received.append(data)
        return {"fired": 1}

    def on_tick(self) -> dict:
        self.received.append("tick")
        return {"silent": 0}


def stored_event(data: dict) -> tuple[dict, bytes]:
    return to_http(CloudEvent({"type": TELEMETRY_STORED_TYPE, "source": "/easysmart/process", "id": "b-1"}, data))


def test_stored_events_and_ticks_reach_the_engine_and_others_are_400(functions, monkeypatch):
    alerts, _, module = functions
    engine = FakeEngine()
    monkeypatch.setattr(module, "_engine", lambda: engine)
    headers, body = stored_event({"tenant_id": "t", "batch_id": "b"})

    stored = alerts.post("/", data=body, headers=headers)
    tick = alerts.post(
        "/", data=b'{"job": "tick"}', headers={**ping_headers("alerts-tick"), "Content-Type": "application/json"}
    )
    other_job = alerts.post(
        "/", data=b'{"job": "expire"}', headers={**ping_headers("x"), "Content-Type": "application/json"}
    )
    not_an_event = alerts.post("/", json={"job": "tick"})

    assert (stored.status_code, stored.get_json()) == (200, {"fired": 1})
    assert (tick.status_code, tick.get_json()) == (200, {"silent": 0})
    assert (other_job.status_code, not_an_event.status_code) == (400, 400)
    assert engine.received == [{"tenant_id": "t", "batch_id": "b"}, "tick"]


def test_an_engine_outage_is_503_so_the_source_retries(functions, monkeypatch):
    alerts, _, module = functions
    monkeypatch.setattr(module, "_engine", lambda: FakeEngine(UnavailableError("database unavailable")))
    headers, body = stored_event({"tenant_id": "t", "batch_id": "b"})

    answer = alerts.post("/", data=body, headers=headers)

    assert answer.status_code == 503 and answer.headers["Retry-After"]


def test_a_rule_made_through_the_api_fires_on_a_stored_event_with_the_real_engine(
    functions, make_account, database, blobs, token_settings
):
    # The engine's own tests hold evaluation; this one holds the path from the API's rule to the API's alert.
    from support.claims import TEST_KEYRING
    from test_alert_engine import PROBE, item, store_upload, temperatures

    from easysmart.config import ProcessSettings, RetentionSettings, UploadLimits
    from easysmart.process import BatchProcessor

    alerts, analytics, _ = functions
    device = make_account("device")
    with database.transaction() as cursor:
        user_id = accounts.create_account(cursor, device.tenant_name, "user", f"u-{device.username}", "pw-user-1")
    user = _bearer(TokenService(token_settings), Principal(user_id, device.tenant_id, "user"))
    processor = BatchProcessor(
        ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING
    )
    store_upload(processor, blobs, database, device, item({PROBE: ("temperature", temperatures([-18], 30))}))
    rule = alerts.post(
        "/api/v1/alerts/rules",
        json={"type": "threshold", "sensor_uuid": PROBE, "above": -15, "for_s": 600, "severity": "critical"},
        headers=user,
    )
    warm = store_upload(
        processor, blobs, database, device, item({PROBE: ("temperature", temperatures([-12] * 6 + [-9] * 6, 12))})
    )
    headers, body = stored_event(warm)

    evaluated = alerts.post("/", data=body, headers=headers)
    redelivered = alerts.post("/", data=body, headers=headers)
    (alert,) = alerts.get("/api/v1/alerts?state=open", headers=user).get_json()["alerts"]
    acked = alerts.post(f"/api/v1/alerts/{alert['id']}/ack", json={"comment": "moved the stock"}, headers=user)
    view = analytics.get(f"/api/v1/analytics/home-assistant/{warm['equipment'][0]['equipment_uuid']}", headers=user)

    assert rule.status_code == 201, rule.get_json()
    assert evaluated.status_code == 200 and evaluated.get_json()["fired"] == [alert["id"]]
    assert redelivered.status_code == 200 and redelivered.get_json()["fired"] == []
    assert (alert["rule_id"], alert["sensor_uuid"], alert["trigger_value"], alert["peak_value"]) == (
        rule.get_json()["id"],
        PROBE,
        -12.0,
        -9.0,
    )
    assert acked.get_json()["state"] == "acknowledged"
    assert [(a["id"], a["ack_comment"]) for a in view.get_json()["open_alerts"]] == [(alert["id"], "moved the stock")]
