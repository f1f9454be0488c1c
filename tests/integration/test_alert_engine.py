"""The alerts engine against the real PostgreSQL: readings stored through process, the stored event process
wrote to the outbox handed to on_stored, alerts rows and their outbox events checked; silence on the tick and
its lag guard."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from support.claims import TEST_KEYRING, stage

from easysmart.alerting import lifecycle
from easysmart.alerting.engine import AlertEngine
from easysmart.alerting.store import processing_lag_s
from easysmart.config import AlertSettings, ProcessSettings, RetentionSettings, UploadLimits
from easysmart.outbox import ALERT_EVENTS_TOPIC, ALERT_FIRED_TYPE
from easysmart.process import STORED_EVENT_NAMESPACE, BatchProcessor

FREEZER = "f0000000-0000-4000-8000-000000000001"
PROBE = "f0000000-0000-4000-8000-0000000000a1"
DOOR = "f0000000-0000-4000-8000-0000000000d1"


@pytest.fixture
def processor(database, blobs):
    return BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)


@pytest.fixture
def engine(database):
    return AlertEngine(database, AlertSettings())


# Readings' times count from one instant, so a test names the same time twice alike.
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def disabled_afterwards(database):
    """Rules the test appends are disabled when it ends: a silence rule left enabled would make every later
    tick (the stack's too) fire for the test's tenant."""
    rules: list[str] = []
    yield rules
    with database.transaction() as cursor:
        cursor.execute("UPDATE alert_rules SET enabled = false WHERE id = ANY(%s::uuid[])", (rules,))


def minutes_ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def item(
    readings: dict[str, tuple[str, list[tuple[datetime, object]]]],
    siren: tuple[str, int] = ("NÃO", 120),
    battery_pct: float = 90.0,
):
    """One upload item of the freezer: readings per sensor uuid, as (kind, [(time, value)])."""
    return {
        "equip_uuid": FREEZER,
        "equip_nome": "Freezer Sorvetes",
        "equip_intervalo_coleta": 60,
        "equip_sirene_ativa": siren[0],
        "equip_sirete_tempo": siren[1],
        "sensor": [
            {
                "sensor_uuid": sensor_uuid,
                "sensor_nome": f"{kind} probe",
                "sensor_tipo": kind,
                "sensor_unidade": "°C" if kind == "temperature" else "",
                "sensor_telemetria": str(value),
                "sensor_datahora_coleta": ts.isoformat(),
                "sensor_bateria_pct": battery_pct,
            }
            for sensor_uuid, (kind, series) in readings.items()
            for ts, value in series
        ],
    }


def store_upload(processor, blobs, database, account, upload: dict) -> dict:
    """Stores the upload through process and answers the data of the telemetry.stored event it wrote."""
    claim = stage(blobs, account, [upload])
    assert processor.process(claim).stored > 0
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT data FROM event_outbox WHERE event_id = %s",
            (str(uuid.uuid5(STORED_EVENT_NAMESPACE, claim.batch_id)),),
        )
        return cursor.fetchone()[0]


def add_rule(database, tenant_id: str, **fields) -> str:
    rule_id = str(uuid.uuid4())
    fields = {"id": rule_id, "tenant_id": tenant_id, "severity": "critical", **fields}
    with database.transaction() as cursor:
        cursor.execute(
            f"INSERT INTO alert_rules ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))})",
            tuple(fields.values()),
        )
    return rule_id


def sensor_id(database, tenant_id: str, sensor_uuid: str) -> int:
    with database.transaction() as cursor:
        cursor.execute("SELECT id FROM sensors WHERE tenant_id = %s AND uuid = %s", (tenant_id, sensor_uuid))
        return cursor.fetchone()[0]


def alerts_of(database, tenant_id: str) -> list[dict]:
    with database.transaction() as cursor:
        cursor.execute("SELECT * FROM alerts WHERE tenant_id = %s ORDER BY started_at", (tenant_id,))
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def events_of(database, tenant_id: str) -> list[tuple[str, dict]]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT type, data FROM event_outbox WHERE topic = %s AND kafka_key = %s ORDER BY id",
            (ALERT_EVENTS_TOPIC, tenant_id),
        )
        return cursor.fetchall()


def temperatures(values: list[float], start_min: float) -> list[tuple[datetime, object]]:
    """One reading a minute, the first `start_min` minutes ago."""
    return [(minutes_ago(start_min - i), v) for i, v in enumerate(values)]


def test_threshold_fires_once_redelivery_changes_nothing_and_readings_inside_resolve(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    first = item(
        {
            PROBE: (
                "temperature",
                temperatures([-18, -18, -14, -13, -12, -12, -13, -12, -12, -13, -12, -12, -12, -11], 14),
            )
        }
    )
    data = store_upload(processor, blobs, database, account, first)
    rule = add_rule(
        database,
        account.tenant_id,
        type="threshold",
        sensor_id=sensor_id(database, account.tenant_id, PROBE),
        above=-15.0,
        for_s=600,
        name="freezer warm",
    )

    report = engine.on_stored(data)
    again = engine.on_stored(data)

    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["rule_id"], alert["state"], alert["late"]) == (uuid.UUID(rule), "firing", False)
    assert (alert["trigger_value"], alert["peak_value"]) == (-14, -11)
    assert alert["started_at"] == minutes_ago(12)
    assert report["fired"] == [str(alert["id"])] and again["redelivered"] and again["fired"] == []
    ((kind, event),) = events_of(database, account.tenant_id)
    assert kind == ALERT_FIRED_TYPE
    assert (event["transition"], event["sequence"], event["timezone"]) == ("fired", 1, "America/Sao_Paulo")
    assert event["alert"]["equipment_uuid"] == FREEZER and event["alert"]["sensor_uuid"] == PROBE
    assert event["alert"]["rule"] == {"above": -15.0, "below": None, "for_s": 600, "name": "freezer warm"}
    assert (event["alert"]["unit"], event["alert"]["equipment_name"]) == ("°C", "Freezer Sorvetes")

    back = store_upload(processor, blobs, database, account, item({PROBE: ("temperature", [(minutes_ago(0), -17)])}))
    resolved = engine.on_stored(back)

    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["state"], alert["ended_at"], alert["peak_value"]) == ("resolved", minutes_ago(0), -11)
    assert resolved["resolved"] == [str(alert["id"])]
    assert [event["transition"] for _, event in events_of(database, account.tenant_id)] == ["fired", "resolved"]


def test_late_excursion_that_ended_in_the_upload_is_one_fired_event_with_its_end(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    hours_ago = 3 * 60
    late = item({PROBE: ("temperature", temperatures([-18] + [-12] * 20 + [-18] * 5, hours_ago))})
    data = store_upload(processor, blobs, database, account, late)
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=600)

    engine.on_stored(data)

    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["state"], alert["late"]) == ("resolved", True)
    assert (alert["started_at"], alert["ended_at"]) == (minutes_ago(hours_ago - 1), minutes_ago(hours_ago - 21))
    ((kind, event),) = events_of(database, account.tenant_id)
    assert (kind, event["transition"], event["alert"]["state"]) == (ALERT_FIRED_TYPE, "fired", "resolved")
    assert event["alert"]["ended_at"] == minutes_ago(hours_ago - 21).isoformat()
    now = datetime.now(timezone.utc)
    view = lifecycle.acknowledge(database, account.tenant_id, str(alert["id"]), account.account_id, "checked", now)
    assert view is not None and (view["state"], view["ack_comment"]) == ("resolved", "checked")
    assert len(events_of(database, account.tenant_id)) == 1  # the corrective action recorded, nothing notified


def test_client_door_rule_follows_the_siren_until_a_user_edits_it_and_fires(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    door_open = [(minutes_ago(6 - i * 0.5), 0 if i in (0, 11) else 1) for i in range(12)]  # open 5 minutes
    data = store_upload(processor, blobs, database, account, item({DOOR: ("door", door_open)}, siren=("SIM", 120)))

    report = engine.on_stored(data)

    with database.transaction() as cursor:
        cursor.execute("SELECT id, origin, severity, for_s FROM alert_rules WHERE tenant_id = %s", (account.tenant_id,))
        ((rule_id, origin, severity, for_s),) = cursor.fetchall()
    assert (origin, severity, for_s, report["client_rules_changed"]) == ("client", "warning", 120, 1)
    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["type"], alert["state"], alert["rule_id"]) == ("door_open", "resolved", rule_id)
    assert (alert["started_at"], alert["ended_at"]) == (minutes_ago(5.5), minutes_ago(0.5))

    closed = [(minutes_ago(0), 0)]
    engine.on_stored(store_upload(processor, blobs, database, account, item({DOOR: ("door", closed)}, ("SIM", 300))))
    assert rule_settings(database, account.tenant_id) == [(300, True)]
    with database.transaction() as cursor:
        cursor.execute("UPDATE alert_rules SET for_s = 60, user_edited = true WHERE id = %s", (rule_id,))
    closed = [(minutes_ago(0) + timedelta(seconds=5), 0)]
    engine.on_stored(store_upload(processor, blobs, database, account, item({DOOR: ("door", closed)}, ("SIM", 900))))
    assert rule_settings(database, account.tenant_id) == [(60, True)]
    with database.transaction() as cursor:  # the user deletes it
        cursor.execute("UPDATE alert_rules SET enabled = false, deleted_at = now() WHERE id = %s", (rule_id,))
    closed = [(minutes_ago(0) + timedelta(seconds=10), 0)]
    engine.on_stored(store_upload(processor, blobs, database, account, item({DOOR: ("door", closed)}, ("SIM", 900))))
    assert rule_settings(database, account.tenant_id) == [(60, False)]


def test_a_stored_event_kafka_refused_does_not_hold_silence_alerts_off(database):
    # Two days ahead: the shared database's own waiting rows are too old to count.
    later = datetime.now(timezone.utc) + timedelta(days=2)
    event_id = str(uuid.uuid4())
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO event_outbox (event_id, topic, kafka_key, type, source, data, created_at)"
            " VALUES (%s, 'telemetry.stored', 'tenant', 'com.easysmart.telemetry.stored', '/test', '{}', %s)",
            (event_id, later - timedelta(minutes=10)),
        )
        waiting = processing_lag_s(cursor, later, later - timedelta(minutes=30))
        cursor.execute(
            "UPDATE event_outbox SET refused_at = now(), refusal = 'MessageSizeTooLargeError' WHERE event_id = %s",
            (event_id,),
        )
        refused = processing_lag_s(cursor, later, later - timedelta(minutes=30))
        cursor.execute("DELETE FROM event_outbox WHERE event_id = %s", (event_id,))

    assert (waiting, refused) == (600, 0)


def rule_settings(database, tenant_id: str) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute("SELECT for_s, enabled FROM alert_rules WHERE tenant_id = %s", (tenant_id,))
        return cursor.fetchall()


def test_silence_fires_past_the_threshold_is_resolved_by_the_next_upload_and_waits_while_the_backend_is_behind(
    processor, blobs, database, make_account, disabled_afterwards
):
    account = make_account()
    data = store_upload(processor, blobs, database, account, item({PROBE: ("temperature", [(minutes_ago(1), -18)])}))
    disabled_afterwards.append(add_rule(database, account.tenant_id, type="silence", severity="warning"))
    # Ticks two days ahead: the shared database's own pending batches are then too old to count as lag.
    later = datetime.now(timezone.utc) + timedelta(days=2)
    settings = AlertSettings()
    AlertEngine(database, settings).on_stored(data)
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO batches (id, tenant_id, account_id, sha256, status, bucket, object_key, size_bytes,"
            " received_at) VALUES (%s, %s, %s, 'x', 'accepted', 'b', 'k', 1, %s)",
            (str(uuid.uuid4()), account.tenant_id, account.account_id, later - timedelta(minutes=10)),
        )

    behind = AlertEngine(database, settings, clock=lambda: later).on_tick()

    assert behind["skipped"] and behind["processing_lag_s"] == 600 and alerts_of(database, account.tenant_id) == []
    with database.transaction() as cursor:
        cursor.execute("DELETE FROM batches WHERE tenant_id = %s AND status = 'accepted'", (account.tenant_id,))

    ticked = AlertEngine(database, settings, clock=lambda: later).on_tick()
    AlertEngine(database, settings, clock=lambda: later + timedelta(minutes=1)).on_tick()

    (alert,) = alerts_of(database, account.tenant_id)
    assert str(alert["id"]) in ticked["fired"] and not ticked["skipped"]  # earlier tests' tenants may fire too
    assert (alert["type"], alert["state"], alert["sensor_id"]) == ("silence", "firing", None)
    assert alert["started_at"] == datetime.fromisoformat(data["received_at"])
    # An event of an upload received before the silence began (delivered late) does not end it.
    earlier = datetime.fromisoformat(data["received_at"]) - timedelta(minutes=1)
    late = AlertEngine(database, settings).on_stored(
        dict(data, batch_id=str(uuid.uuid4()), received_at=earlier.isoformat())
    )
    assert late["resolved"] == [] and alerts_of(database, account.tenant_id)[0]["state"] == "firing"

    upload = store_upload(processor, blobs, database, account, item({PROBE: ("temperature", [(minutes_ago(0), -18)])}))
    AlertEngine(database, settings).on_stored(upload)

    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["state"], alert["ended_at"]) == ("resolved", datetime.fromisoformat(upload["received_at"]))
    assert (alert["peak_value"], alert["transitions"]) == (None, 2)
    assert [event["transition"] for _, event in events_of(database, account.tenant_id)] == ["fired", "resolved"]


def test_acknowledge_records_who_and_emits_once(processor, blobs, database, engine, make_account):
    account = make_account()
    warm = item({PROBE: ("temperature", temperatures([-12] * 12, 12))})
    data = store_upload(processor, blobs, database, account, warm)
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=600)
    engine.on_stored(data)
    (alert,) = alerts_of(database, account.tenant_id)
    now = datetime.now(timezone.utc)

    view = lifecycle.acknowledge(database, account.tenant_id, str(alert["id"]), account.account_id, "door fixed", now)
    lifecycle.acknowledge(database, account.tenant_id, str(alert["id"]), account.account_id, "again", now)

    assert view is not None
    assert (view["state"], view["acknowledged_by"], view["ack_comment"]) == (
        "acknowledged",
        account.account_id,
        "door fixed",
    )
    assert lifecycle.acknowledge(database, str(uuid.uuid4()), str(alert["id"]), account.account_id, None, now) is None
    assert [event["transition"] for _, event in events_of(database, account.tenant_id)] == ["fired", "acknowledged"]


def test_maintenance_window_keeps_rules_from_firing(processor, blobs, database, engine, make_account):
    account = make_account()
    data = store_upload(
        processor, blobs, database, account, item({PROBE: ("temperature", temperatures([-12] * 12, 12))})
    )
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=600)
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO maintenance_windows (id, tenant_id, equipment_id, starts_at, ends_at, reason)"
            " SELECT %s, tenant_id, id, %s, %s, 'defrost' FROM equipment WHERE tenant_id = %s",
            (str(uuid.uuid4()), minutes_ago(30), minutes_ago(-30), account.tenant_id),
        )

    report = engine.on_stored(data)

    assert report["rules_evaluated"] == 1 and alerts_of(database, account.tenant_id) == []


def test_resolved_alerts_past_the_history_are_pruned(processor, blobs, database, engine, make_account):
    account = make_account()
    short = item({PROBE: ("temperature", temperatures([-12] * 12 + [-18], 13))})
    data = store_upload(processor, blobs, database, account, short)
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=600)
    engine.on_stored(data)
    (alert,) = alerts_of(database, account.tenant_id)
    assert alert["state"] == "resolved"

    engine.prune(alert["ended_at"] + timedelta(days=729))
    assert len(alerts_of(database, account.tenant_id)) == 1
    with database.transaction() as cursor:  # as if it had ended three years ago
        cursor.execute("UPDATE alerts SET ended_at = ended_at - interval '3 years' WHERE id = %s", (alert["id"],))
    engine.prune(alert["ended_at"])

    assert alerts_of(database, account.tenant_id) == []


def test_tenant_wide_low_battery_fires_per_sensor_and_a_snooze_keeps_it_tracked(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    readings = {PROBE: ("temperature", [(minutes_ago(2), -18)]), DOOR: ("door", [(minutes_ago(2), 0)])}
    data = store_upload(processor, blobs, database, account, item(readings, battery_pct=12.0))
    add_rule(database, account.tenant_id, type="battery_low", below=20.0, severity="warning")

    engine.on_stored(data)

    alerts = alerts_of(database, account.tenant_id)
    assert sorted(a["sensor_id"] for a in alerts) == sorted(
        sensor_id(database, account.tenant_id, uuid_) for uuid_ in (PROBE, DOOR)
    )
    assert {(a["type"], a["state"], a["trigger_value"]) for a in alerts} == {("battery_low", "firing", 12.0)}
    until = NOW + timedelta(hours=4)
    view = lifecycle.snooze(database, account.tenant_id, str(alerts[0]["id"]), until, NOW)
    assert view is not None and (view["state"], view["snoozed_until"]) == ("firing", until.isoformat())
    assert [event["transition"] for _, event in events_of(database, account.tenant_id)] == ["fired", "fired"]


def test_late_range_still_beyond_at_its_end_is_closed_by_readings_already_stored_after_it(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=600)
    after = item({PROBE: ("temperature", temperatures([-18] * 10, 170))})
    engine.on_stored(store_upload(processor, blobs, database, account, after))
    late = item({PROBE: ("temperature", temperatures([-12] * 30, 200))})  # 200 to 171 minutes ago

    report = engine.on_stored(store_upload(processor, blobs, database, account, late))

    (alert,) = alerts_of(database, account.tenant_id)
    assert report["fired"] == [str(alert["id"])] and report["resolved"] == []
    assert (alert["state"], alert["late"]) == ("resolved", True)
    assert (alert["started_at"], alert["ended_at"]) == (minutes_ago(200), minutes_ago(170))
    assert [event["transition"] for _, event in events_of(database, account.tenant_id)] == ["fired"]


def test_a_door_reporting_only_its_changes_is_an_excursion_from_its_opening(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    add_rule(database, account.tenant_id, type="door_open", sensor_kind="door", for_s=120, severity="warning")
    engine.on_stored(store_upload(processor, blobs, database, account, item({DOOR: ("door", [(minutes_ago(40), 1)])})))
    assert alerts_of(database, account.tenant_id) == []

    engine.on_stored(store_upload(processor, blobs, database, account, item({DOOR: ("door", [(minutes_ago(0), 0)])})))

    (alert,) = alerts_of(database, account.tenant_id)
    assert (alert["state"], alert["started_at"], alert["ended_at"]) == ("resolved", minutes_ago(40), minutes_ago(0))


def test_a_flapping_sensor_is_folded_into_one_alert_instead_of_firing_again(
    processor, blobs, database, engine, make_account
):
    account = make_account()
    add_rule(database, account.tenant_id, type="threshold", sensor_kind="temperature", above=-15.0, for_s=60)
    flapping = [-14, -14, -16, -16] * 5 + [-16] * 31  # two minutes beyond, two inside, five times; then inside
    data = store_upload(processor, blobs, database, account, item({PROBE: ("temperature", temperatures(flapping, 55))}))

    engine.on_stored(data)

    first, second = alerts_of(database, account.tenant_id)
    assert (first["started_at"], first["ended_at"]) == (minutes_ago(55), minutes_ago(53))
    assert (second["started_at"], second["ended_at"], second["transitions"]) == (minutes_ago(51), minutes_ago(37), 8)
    transitions = [event["transition"] for _, event in events_of(database, account.tenant_id)]
    assert transitions == ["fired", "fired"]  # each ended within the upload: one event each, carrying its end
