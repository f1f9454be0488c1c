from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from easysmart.payload import (
    FieldLimits,
    ReadingNormaliser,
    ReadingRejected,
    canonical_kind,
    equipment_info,
    identity_problem,
    parse_number,
    sensor_info,
    structure_violations,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def normaliser(zone: str = "America/Sao_Paulo") -> ReadingNormaliser:
    return ReadingNormaliser(zone, NOW, retention_days=30, future_tolerance_s=86400)


def reading(**overrides) -> dict:
    base = {
        "sensor_uuid": "s-1",
        "sensor_tipo": "temperature",
        "sensor_telemetria": "-18.5",
        "sensor_datahora_coleta": "2026-11-20T08:00:00.000000",
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "raw, kind",
    [
        ("temperature", "temperature"),
        ("temperatura", "temperature"),
        ("umidade", "humidity"),
        ("energia", "power"),
        ("tensao", "voltage"),
        ("corrente", "current"),
        ("porta", "door"),
        ("opening", "door"),
        ("window", "door"),
        ("sirene", "siren"),
        ("botao", "button"),
        ("Status", "status"),
        ("signal_strength", "signal_strength"),
        ("", None),
        (None, None),
    ],
)
def test_both_vocabularies_map_to_canonical_kinds(raw, kind):
    assert canonical_kind(raw) == kind


@pytest.mark.parametrize(
    "text, number",
    [
        ("-18.5", -18.5),
        ("23,5", 23.5),
        ("7", 7.0),
        (" 1e3 ", 1000.0),
        ("1,234.5", None),
        ("NaN", None),
        ("inf", None),
        ("abc", None),
    ],
)
def test_numbers_with_dot_or_comma_decimals(text, number):
    assert parse_number(text) == number


def test_naive_time_is_read_in_tenant_zone_and_stored_as_utc():
    result = normaliser().normalise(reading())
    assert result.ts == datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "zone, transition",
    [
        ("Europe/Berlin", datetime(2026, 3, 29, 2, 0)),  # a gap
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 30)),  # an hour repeated
        ("America/Sao_Paulo", datetime(2018, 11, 4, 0, 0)),  # a gap at midnight
        ("America/Sao_Paulo", datetime(2019, 2, 16, 23, 30)),  # repeated
        ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45)),  # half an hour repeated
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 0)),  # half an hour skipped
    ],
)
def test_distinct_naive_times_around_a_zone_transition_read_as_the_zone_reads_them(zone, transition):
    # The zone's offset is remembered per local hour; hours where it changes are read by the zone's own rules.
    now = transition.replace(tzinfo=timezone.utc)
    reader = ReadingNormaliser(zone, now, retention_days=30, future_tolerance_s=86400)
    for step in range(-40, 40):
        local = transition + timedelta(minutes=7 * step, seconds=13, microseconds=123_457 * (step % 8))
        result = reader.normalise(reading(sensor_datahora_coleta=local.isoformat()))
        expected = local.replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)
        assert (result.ts, result.ts_text) == (expected, expected.isoformat()), local


@pytest.mark.parametrize(
    "zone, stamp", [("Asia/Tokyo", "0001-01-01T00:00:00"), ("America/Sao_Paulo", "9999-12-31T23:00:00")]
)
def test_a_naive_time_whose_utc_falls_outside_the_years_python_holds_is_rejected(zone, stamp):
    with pytest.raises(ReadingRejected) as rejected:
        normaliser(zone).normalise(reading(sensor_datahora_coleta=stamp))
    assert rejected.value.reason.startswith("sensor_datahora_coleta: outside the times that can be stored")


def test_aware_times_are_converted_to_utc():
    result = normaliser().normalise(reading(sensor_datahora_coleta="2026-11-20T08:00:00-03:00"))
    assert result.ts == datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)
    result = normaliser().normalise(reading(sensor_datahora_coleta="2026-11-20T08:00:00Z"))
    assert result.ts == datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "state, value, text",
    [
        ("on", 1.0, "on"),
        ("off", 0.0, "off"),
        ("open", 1.0, "on"),
        ("closed", 0.0, "off"),
        ("true", 1.0, "on"),
        ("idle", None, "idle"),
        ("2026-11-20T08:00:00+00:00", None, "2026-11-20T08:00:00+00:00"),
    ],
)
def test_states(state, value, text):
    result = normaliser().normalise(reading(sensor_telemetria=state))
    assert (result.value, result.state) == (value, text)


@pytest.mark.parametrize("state", ["unknown", "unavailable", "", "  "])
def test_unknown_and_unavailable_are_skipped(state):
    with pytest.raises(ReadingRejected) as caught:
        normaliser().normalise(reading(sensor_telemetria=state))
    assert caught.value.skipped


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"sensor_telemetria": "NaN"}, "not a finite number"),
        ({"sensor_telemetria": "-Infinity"}, "not a finite number"),
        ({"sensor_telemetria": "1e999"}, "not a finite number"),
        ({"sensor_datahora_coleta": "2026-13-45T99:99"}, "not an ISO-8601 time"),
        ({"sensor_datahora_coleta": None}, "missing"),
        ({"sensor_datahora_coleta": "2026-11-22T12:00:00Z"}, "more than 24 hours in the future"),
        ({"sensor_datahora_coleta": "2026-10-01T12:00:00Z"}, "older than the raw-data retention"),
        ({"sensor_uuid": ""}, "sensor_uuid"),
    ],
)
def test_bad_readings_are_rejected_with_their_reason(overrides, reason):
    with pytest.raises(ReadingRejected) as caught:
        normaliser().normalise(reading(**overrides))
    assert reason in caught.value.reason
    assert not caught.value.skipped


def test_legacy_fields_are_accepted():
    legacy = {
        "sensor_uuid": "s-2",
        "tipo": "temperatura",
        "valor": 4.2,
        "status": None,
        "timestamp": "2026-11-20T10:00:00Z",
    }
    result = normaliser().normalise(legacy)
    sensor = sensor_info(legacy, result.sensor_uuid)
    assert (result.value, result.ts, sensor.kind) == (
        4.2,
        datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc),
        "temperature",
    )


def test_extras_are_kept():
    raw = reading(
        sensor_bateria_pct=91.0,
        sensor_sinal_rssi=-58,
        sensor_potencia="12,5",
        sensor_fabricante="Aqara",
        sensor_via_hub=True,
    )
    result = normaliser().normalise(raw)
    sensor = sensor_info(raw, result.sensor_uuid)
    assert result.extras == (91.0, None, -58.0, None, None, None, 12.5)
    assert (sensor.manufacturer, sensor.via_hub) == ("Aqara", True)


def test_one_normaliser_gives_every_reading_its_own_answer_whatever_came_before():
    # States and times are read once per normaliser and remembered; answers must not leak
    # between readings or between the modern and legacy field names.
    norm = normaliser()
    for _ in range(2):
        assert norm.normalise(reading(sensor_telemetria="on")).value == 1.0
        with pytest.raises(ReadingRejected) as skipped:
            norm.normalise(reading(sensor_telemetria="unavailable"))
        assert skipped.value.skipped and skipped.value.reason == "sensor_telemetria: state 'unavailable'"
        with pytest.raises(ReadingRejected) as legacy:
            norm.normalise({"sensor_uuid": "s-2", "valor": "nan", "timestamp": "2026-11-20T08:00:00"})
        assert not legacy.value.skipped and legacy.value.reason == "valor: not a finite number: 'nan'"
        with pytest.raises(ReadingRejected) as old:
            norm.normalise(reading(sensor_datahora_coleta="2026-09-01T08:00:00"))
        assert old.value.reason.startswith("sensor_datahora_coleta: older than the raw-data retention")
        with pytest.raises(ReadingRejected) as old_legacy:
            norm.normalise({"sensor_uuid": "s-2", "valor": "1", "timestamp": "2026-09-01T08:00:00"})
        assert old_legacy.value.reason.startswith("timestamp: older than the raw-data retention")
    extras = norm.normalise(
        reading(sensor_bateria_pct=float("inf"), sensor_sinal_lqi=-80.5, sensor_sinal_rssi=-80.5)
    ).extras
    assert extras[:3] == (None, -80.5, -80.5)


@pytest.mark.parametrize("extra", [1e39, -1e39, 1e308, 1e-46, "3.5e39"])
def test_an_extra_a_real_column_cannot_hold_rejects_the_reading(extra):
    with pytest.raises(ReadingRejected) as rejected:
        normaliser().normalise(reading(sensor_bateria_pct=extra))
    assert rejected.value.reason.startswith("sensor_bateria_pct: ") and "real" in rejected.value.reason
    assert not rejected.value.skipped


def test_extras_at_the_edges_of_a_real_are_kept():
    extras = (
        normaliser().normalise(reading(sensor_bateria_pct=3.4e38, sensor_sinal_lqi=1e-40, sensor_sinal_rssi=0.0)).extras
    )
    assert extras[:3] == (3.4e38, 1e-40, 0.0)


def test_an_extra_that_is_a_list_or_an_object_is_stored_as_unknown():
    raw = reading(sensor_bateria_pct=[80], sensor_sinal_lqi={"v": 1}, sensor_sinal_rssi=-60.0)
    assert normaliser().normalise(raw).extras[:3] == (None, None, -60.0)


@pytest.mark.parametrize("state", ["a\u0000b", "\ud800", "x\udfffy"])
def test_a_state_postgresql_text_cannot_hold_rejects_the_reading(state):
    raw = reading(sensor_telemetria=state)
    with pytest.raises(ReadingRejected) as rejected:
        normaliser().normalise(raw)
    assert (
        rejected.value.reason
        == "sensor_telemetria: holds characters that cannot be stored (NUL or an unpaired surrogate)"
    )


def test_state_text_longer_than_its_bound_rejects_the_reading():
    norm = ReadingNormaliser("UTC", NOW, retention_days=30, future_tolerance_s=86400, limits=FieldLimits(state=8))
    assert norm.normalise(reading(sensor_telemetria="defrost")).state == "defrost"
    with pytest.raises(ReadingRejected, match="longer than 8 characters"):
        norm.normalise(reading(sensor_telemetria="defrosting"))


@pytest.mark.parametrize(
    ("sensor_uuid", "reason"),
    [
        ("s" * 129, "sensor_uuid: longer than 128 characters"),
        ("s\u0000", "sensor_uuid: holds characters that cannot be stored (NUL or an unpaired surrogate)"),
    ],
)
def test_a_sensor_uuid_that_cannot_be_stored_rejects_the_reading_and_is_never_cut(sensor_uuid, reason):
    norm = normaliser()
    for _ in range(2):  # the answer is remembered per uuid, and stays the same
        with pytest.raises(ReadingRejected) as rejected:
            norm.normalise(reading(sensor_uuid=sensor_uuid))
        assert rejected.value.reason == reason
    assert norm.normalise(reading(sensor_uuid="s" * 128)).sensor_uuid == "s" * 128


def test_long_or_unstorable_descriptions_are_cut_and_each_cut_is_noted():
    cuts: list[str] = []
    raw = reading(sensor_nome="n" * 300, sensor_unidade="°C\x00", sensor_modelo="m" * 256, sensor_id_hardware="h" * 200)
    info = sensor_info(raw, "s-1", on_cut=cuts.append)
    assert info.name == "n" * 256 and info.unit == "°C" and info.model == "m" * 256 and info.hardware_id is None
    assert sorted(cuts) == [
        "sensor_id_hardware: longer than 128 characters or not storable; left out",
        "sensor_nome: cut to 256 characters",
        "sensor_unidade: characters that cannot be stored were removed",
    ]
    equipment = equipment_info({"equip_uuid": "e", "equip_local": "l" * 257}, on_cut=cuts.append)
    assert equipment.location == "l" * 256 and cuts[-1] == "equip_local: cut to 256 characters"


def test_identity_problem_names_the_field():
    assert identity_problem("equip_uuid", "e" * 128, FieldLimits()) is None
    assert identity_problem("equip_uuid", "e" * 129, FieldLimits()) == "equip_uuid: longer than 128 characters"


def test_equipment_fields_including_the_wire_spelling_of_siren_time():
    info = equipment_info(
        {
            "equip_uuid": " e-1 ",
            "equip_nome": "Freezer",
            "equip_sirene_ativa": "NÃO",
            "equip_sirete_tempo": 120,
            "equip_intervalo_coleta": "60",
        }
    )
    assert (info.uuid, info.name, info.siren_active, info.siren_time_s, info.collect_interval_s) == (
        "e-1",
        "Freezer",
        False,
        120,
        60,
    )


def test_structure_violations_name_their_paths():
    assert structure_violations({"equip_uuid": "e", "sensor": [{}]}, 0) == []
    assert structure_violations([], 2) == ["[2]: not an object"]
    problems = structure_violations({"sensor": []}, 3)
    assert [p.split(":")[0] for p in problems] == ["[3].equip_uuid", "[3].sensor"]


def test_future_tolerance_is_a_day():
    ok = (NOW + timedelta(hours=23)).isoformat()
    result = normaliser().normalise(reading(sensor_datahora_coleta=ok))
    assert result.ts == NOW + timedelta(hours=23)
