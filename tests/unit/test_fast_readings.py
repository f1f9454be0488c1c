"""The fast path for readings in the client's usual shape (ReadingNormaliser.copy_line) against the full rules
(normalise): over readings varied in every field, the fast path gives exactly what normalise gives, or declines."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from support.fakes import FakeCopyWriter

from easysmart.batchbuilder import BatchBuilder
from easysmart.jsonstream import events_from_items
from easysmart.payload import ReadingNormaliser, ReadingRejected, copy_columns

NOW = datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=timezone.utc)  # mid-second, as now() is
RETENTION_DAYS = 30
ZONES = ["America/Sao_Paulo", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu", "America/St_Johns", "UTC"]
# Local times worth meeting besides the window's ends: DST gaps and repeats, plain days.
MOMENTS = [
    datetime(2026, 10, 25, 2, 30),  # Berlin: an hour repeated
    datetime(2026, 10, 4, 2, 0),  # Lord Howe: half an hour skipped
    datetime(2026, 11, 1, 0, 0),
    datetime(2026, 11, 20, 8, 0),
]
EXTRAS = [
    "sensor_bateria_pct",
    "sensor_sinal_lqi",
    "sensor_sinal_rssi",
    "sensor_voltagem_bateria",
    "sensor_voltagem",
    "sensor_corrente",
    "sensor_potencia",
]
MISSING = object()
EXTRA_VALUES = [None, 87.0, 151.0, -58.0, 2.98, 1.0, 0.0, -0.0, True, False, 75, 1e-4, 1e-5, 1e-50, 3.4e38, 3.5e38]
EXTRA_VALUES += [9999999999999998.0, 1e16, float("nan"), float("inf"), "80", "80,5", [1], {"a": 1}, MISSING]
STATES = ["-18.25", "23,5", " 7 ", "1e3", "on", "OFF", "aberta", "unavailable", "", "nan", "defrost", "a\tb\\c"]
STATES += ["x" * 300, "a\x00b", 5, 5.5, -0.0, True, None, float("inf"), [1], MISSING]
UUIDS = ["s-1", "s-2", " s-3 ", "", None, 7, "u" * 200, "a\x00b", ["s-1"]]


def window_ends(zone: str) -> list[datetime]:
    """The window's two ends as naive local times in the zone."""
    ends = (NOW - timedelta(days=RETENTION_DAYS), NOW + timedelta(seconds=86400))
    return [end.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for end in ends]


def local_stamp(rng: random.Random, ends: list[datetime]) -> object:
    if rng.random() < 0.2:
        moment = rng.choice(ends) + timedelta(seconds=rng.randrange(-2, 2))
    else:
        moment = rng.choice(MOMENTS) + timedelta(seconds=rng.randrange(-4000, 4000))
    if rng.random() < 0.6:
        return (moment + timedelta(microseconds=rng.choice([0, 1, 999_999, rng.randrange(1_000_000)]))).isoformat(
            timespec="microseconds"
        )
    return rng.choice(
        [
            moment.isoformat(),
            moment.isoformat(sep=" ", timespec="microseconds"),
            moment.isoformat(timespec="microseconds") + "+01:00",
            moment.isoformat(timespec="microseconds") + "Z",
            " " + moment.isoformat(timespec="microseconds"),
            moment.timestamp(),
            int(moment.timestamp()),
            "2026-13-45T99:99:00.123456",
            "2026-02-30T10:00:00.123456",
            "2026-11-20T08:00:60.123456",
            "2026-11-20T08:00:00.12345x",
            "２０２６-11-20T08:00:00.123456",
            "0001-01-01T00:00:00.123456",  # before year 1 in UTC east of it
            "9999-12-31T23:59:59.123456",  # after year 9999 in UTC west of it
            None,
            True,
            MISSING,
        ]
    )


def varied_reading(rng: random.Random, ends: list[datetime]) -> object:
    if rng.random() < 0.02:
        return rng.choice([[], "reading", 5, None])
    fields = {
        "sensor_uuid": rng.choice(UUIDS) if rng.random() < 0.3 else "s-1",
        "sensor_tipo": "temperature",
        "sensor_telemetria": rng.choice(STATES) if rng.random() < 0.5 else f"{rng.uniform(-30, 30):.2f}",
        "sensor_datahora_coleta": local_stamp(rng, ends),
    }
    for name in EXTRAS:
        usual = rng.choice([None, float(rng.randint(50, 99))])
        fields[name] = rng.choice(EXTRA_VALUES) if rng.random() < 0.05 else usual
    if rng.random() < 0.1:
        # The legacy names: "timestamp" and "valor" (or "status").
        fields["timestamp"] = fields.pop("sensor_datahora_coleta")
        fields["valor" if rng.random() < 0.5 else "status"] = fields.pop("sensor_telemetria")
    return {key: value for key, value in fields.items() if value is not MISSING}


def full_rules(normaliser: ReadingNormaliser, raw: object) -> tuple[str, str] | str:
    try:
        reading = normaliser.normalise(raw)
    except ReadingRejected as rejection:
        return f"{'skipped' if rejection.skipped else 'rejected'}: {rejection.reason}"
    return reading.sensor_uuid, copy_columns(reading)


@pytest.mark.parametrize("zone", ZONES)
def test_the_fast_path_gives_what_the_full_rules_give_or_declines(zone):
    rng = random.Random(zone)
    fast = ReadingNormaliser(zone, NOW, RETENTION_DAYS, 86400)
    full = ReadingNormaliser(zone, NOW, RETENTION_DAYS, 86400)
    taken = 0
    for _ in range(6000):
        raw = varied_reading(rng, window_ends(zone))
        row = fast.copy_line(raw)
        if row is not None:
            taken += 1
            assert row == full_rules(full, raw), raw
    # Not vacuous: a good share of the readings took the fast path.
    assert taken > 500


def upload(rng: random.Random) -> list:
    items: list = []
    for number in range(8):
        sensors = [varied_reading(rng, window_ends("Europe/Berlin")) for _ in range(rng.randrange(1, 400))]
        equipment = {"equip_uuid": f"e-{number}", "equip_nome": f"Freezer {number}", "sensor": sensors}
        if number == 3:
            equipment["equip_uuid"] = "e" * 200  # an unstorable identity: the item's readings are rejected
        if number in (3, 5):
            # The equipment uuid after the sensor list: its readings are staged first.
            equipment = {"sensor": sensors, **{k: v for k, v in equipment.items() if k != "sensor"}}
        items.append(equipment)
    return items


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_gives_the_same_rows_tally_and_time_range_with_the_fast_path_as_without(seed):
    items = upload(random.Random(seed))

    def build(fast_path: bool) -> tuple[BatchBuilder, FakeCopyWriter]:
        normaliser = ReadingNormaliser("Europe/Berlin", NOW, RETENTION_DAYS, 86400)
        if not fast_path:
            normaliser.copy_line = lambda raw: None  # type: ignore[method-assign]
        writer = FakeCopyWriter(None, "tenant")  # type: ignore[arg-type]
        builder = BatchBuilder(normaliser, writer, chunk_readings=97)
        builder.consume(events_from_items(items))
        return builder, writer

    (fast, fast_writer), (full, full_writer) = build(True), build(False)
    assert fast_writer.rows == full_writer.rows
    assert fast_writer.stored == full_writer.stored > 0
    assert fast.tally == full.tally
    assert (fast.oldest, fast.newest) == (full.oldest, full.newest)
    assert fast.tally.rejected and fast.tally.skipped
