"""The upload format of the Home Assistant client: structure checks and reading normalisation.

An upload is a JSON array of equipment objects, each with a `sensor` list of readings
(docs/architecture.md §4). Structure problems refuse the whole upload; a bad reading is only
counted, with its path and reason, because the client would resend a refused upload forever.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from easysmart.copytext import NULL, copy_number, copy_numbers, copy_text
from easysmart.errors import UnprocessableError

MAX_LISTED_REASONS = 100

# Both vocabularies the client sends (HA device classes and the configured Portuguese types)
# map to one canonical English kind.
_KIND_ALIASES = {
    "temperature": "temperature",
    "temperatura": "temperature",
    "temp": "temperature",
    "humidity": "humidity",
    "umidade": "humidity",
    "humidade": "humidity",
    "power": "power",
    "energia": "power",
    "potencia": "power",
    "potência": "power",
    "energy": "energy",
    "voltage": "voltage",
    "tensao": "voltage",
    "tensão": "voltage",
    "voltagem": "voltage",
    "current": "current",
    "corrente": "current",
    "door": "door",
    "porta": "door",
    "opening": "door",
    "window": "door",
    "garage_door": "door",
    "janela": "door",
    "siren": "siren",
    "sirene": "siren",
    "alarme": "siren",
    "button": "button",
    "botao": "button",
    "botão": "button",
    "status": "status",
    "estado": "status",
    "battery": "battery",
    "bateria": "battery",
    "moisture": "moisture",
    "motion": "motion",
    "movimento": "motion",
}
_ON_STATES = {"on", "open", "opened", "true", "aberta", "aberto", "ligado", "sim"}
_OFF_STATES = {"off", "closed", "false", "fechada", "fechado", "desligado", "não", "nao"}
_SKIPPED_STATES = {"", "unknown", "unavailable", "none", "null"}
_DOT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_COMMA_NUMBER = re.compile(r"[+-]?\d+,\d+")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}

_EXTRA_FIELDS = (
    "sensor_bateria_pct",
    "sensor_sinal_lqi",
    "sensor_sinal_rssi",
    "sensor_voltagem_bateria",
    "sensor_voltagem",
    "sensor_corrente",
    "sensor_potencia",
)
_FLOAT_OR_NONE = frozenset({float, type(None)})
EXTRA_COLUMNS = ("battery_pct", "lqi", "rssi", "battery_voltage", "voltage", "current", "power")
# Extras are stored as PostgreSQL `real`: finite, at most this large, and not so small that they round to zero.
_REAL_MAX = 3.4028234663852886e38
_REAL_MIN = 1.401298464324817e-45
# PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The second of a naive local time as the client writes it (datetime.now().isoformat()), before ".ffffff".
_LOCAL_SECOND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_LAST_MICROSECOND = timedelta(microseconds=999_999)


_extras_of = operator.itemgetter(*_EXTRA_FIELDS)
# Any text holding an "n" sends a reading's extras to normalise(), which reads them by every rule.
_NOT_A_PLAIN_FLOAT = "n"


class _ExtraTexts(dict):
    """An extra (float or None) -> its COPY text, made on a miss. Only floats are kept, and never one equal to a
    boolean (True == 1.0, False == 0.0 == -0.0, which reads differently) or NaN; an int finds the equal float's text,
    as normalise() would write it. Any other value is _NOT_A_PLAIN_FLOAT."""

    def __missing__(self, value: object) -> str:
        if type(value) is not float:
            return _NOT_A_PLAIN_FLOAT
        text = repr(value)
        if value != 0.0 and value != 1.0 and value == value and len(self) < 20_000:
            self[value] = text
        return text


@dataclass(frozen=True)
class FieldLimits:
    """Longest text stored per kind of field (characters). Identities are never cut; descriptions are."""

    identity: int = 128
    description: int = 256
    state: int = 255


def unstorable_text(value: str) -> bool:
    """True when PostgreSQL text cannot hold `value` (NUL, or a lone surrogate from a JSON escape)."""
    return _UNSTORABLE.search(value) is not None


def identity_problem(name: str, value: str, limits: FieldLimits) -> str | None:
    """Why an identity (an equipment or sensor uuid, a hardware id) cannot be stored, or None."""
    if len(value) > limits.identity:
        return f"{name}: longer than {limits.identity} characters"
    if unstorable_text(value):
        return f"{name}: holds characters that cannot be stored (NUL or an unpaired surrogate)"
    return None


def canonical_kind(raw: object) -> str | None:
    """The canonical English kind for either vocabulary; unknown kinds pass through lower-cased."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    name = raw.strip().lower()
    return _KIND_ALIASES.get(name, name)


@dataclass(frozen=True)
class EquipmentInfo:
    uuid: str
    name: str | None
    location: str | None
    status: str | None
    collect_interval_s: int | None
    siren_active: bool | None
    siren_time_s: int | None


@dataclass(frozen=True)
class SensorInfo:
    uuid: str
    name: str | None
    kind: str | None
    unit: str | None
    status: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    hardware_id: str | None
    via_hub: bool | None


class Reading(NamedTuple):
    # A NamedTuple: one is made per reading, and a frozen dataclass costs several times more.
    sensor_uuid: str
    ts: datetime
    ts_text: str  # ts in ISO-8601 UTC, kept because many readings share a time
    value: float | None
    state: str | None
    extras: tuple[float | None, ...]


def copy_columns(reading: Reading) -> str:
    """The reading's COPY columns after its sensor's (ts, value, state, extras), as one line without its newline."""
    return (
        f"{reading.ts_text}\t{copy_number(reading.value)}\t{copy_text(reading.state)}\t{copy_numbers(reading.extras)}"
    )


@dataclass
class Tally:
    """Counts of what happened to an upload's readings, with the first reasons and their paths."""

    readings: int = 0
    valid: int = 0
    skipped: int = 0
    rejected: int = 0
    reasons: list[dict] = field(default_factory=list)
    reason_counts: dict[str, int] = field(default_factory=dict)

    def _note(self, path: str, reason: str, outcome: str, count: int = 1) -> None:
        self.reason_counts[reason] = self.reason_counts.get(reason, 0) + count
        if len(self.reasons) < MAX_LISTED_REASONS:
            self.reasons.append({"path": path, "reason": reason, "outcome": outcome})

    def skip(self, path: str, reason: str) -> None:
        self.skipped += 1
        self._note(path, reason, "skipped")

    def reject(self, path: str, reason: str, count: int = 1) -> None:
        self.rejected += count
        self._note(path, reason, "rejected", count)

    def cut(self, path: str, reason: str) -> None:
        """A descriptive field was shortened or cleaned to be stored; the reading itself is kept."""
        self._note(path, reason, "cut")


class ReadingRejected(UnprocessableError):
    """One reading that is not stored: `skipped` when it carries no value (a state such as "unavailable"),
    rejected otherwise. Process tallies it; the batch goes on."""

    code = "reading_rejected"

    def __init__(self, reason: str, skipped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skipped = skipped


def structure_violations(item: object, index: int) -> list[str]:
    """Paths (with what is wrong) that make an equipment item unusable as a whole."""
    if not isinstance(item, dict):
        return [f"[{index}]: not an object"]
    problems = []
    equip_uuid = item.get("equip_uuid")
    if not isinstance(equip_uuid, str) or not equip_uuid.strip():
        problems.append(f"[{index}].equip_uuid: missing or not a non-empty string")
    sensors = item.get("sensor")
    if not isinstance(sensors, list) or not sensors:
        problems.append(f"[{index}].sensor: missing or not a non-empty list")
    return problems


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float, bool)):
        return str(value)
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return parse_number(value)
    return None


def _storable_reals(extras: tuple) -> bool:
    """True when every extra is a float or None that a `real` column holds as it is (the common case)."""
    if not _FLOAT_OR_NONE.issuperset(map(type, extras)):
        return False
    present = [abs(value) for value in extras if value]
    # max() is infinite or NaN-poisoned when one is; a NaN fails every comparison.
    return not present or (_REAL_MIN <= min(present) and max(present) <= _REAL_MAX)


def _extra(name: str, value: object) -> float | None:
    number = None if value is None else value if type(value) is float else _number(value)
    if number is None or not math.isfinite(number):
        # Absent, unreadable or not finite: stored as unknown, as always.
        return None
    if number != 0 and not _REAL_MIN <= abs(number) <= _REAL_MAX:
        raise ReadingRejected(f"{name}: {number!r} is outside the range a stored real can hold")
    return number


def _int(value: object) -> int | None:
    number = _number(value)
    if number is None or abs(number) > 2**31 - 1:
        return None
    return int(number)


def _yes_no(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _text(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in {"sim", "yes", "true", "on", "1", "s"}:
        return True
    if lowered in {"não", "nao", "no", "false", "off", "0", "n"}:
        return False
    return None


def parse_number(text: str) -> float | None:
    """'-18.5' and '23,5' are numbers; anything else (including NaN and infinities) is not."""
    stripped = text.strip()
    if _DOT_NUMBER.fullmatch(stripped):
        value = float(stripped)
    elif _COMMA_NUMBER.fullmatch(stripped):
        value = float(stripped.replace(",", "."))
    else:
        return None
    return value if math.isfinite(value) else None


CutNote = Callable[[str], None]


def _description(reading: dict, key: str, limit: int, on_cut: CutNote | None) -> str | None:
    """The text of a descriptive field, cut to `limit` and cleaned of what text cannot hold (noted)."""
    return _bounded(key, _text(reading.get(key)), limit, on_cut)


def _bounded(key: str, text: str | None, limit: int, on_cut: CutNote | None) -> str | None:
    if text is None:
        return None
    if unstorable_text(text):
        text = _UNSTORABLE.sub("", text).strip() or None
        if on_cut is not None:
            on_cut(f"{key}: characters that cannot be stored were removed")
        if text is None:
            return None
    if len(text) > limit:
        text = text[:limit]
        if on_cut is not None:
            on_cut(f"{key}: cut to {limit} characters")
    return text


def equipment_info(item: dict, limits: FieldLimits = FieldLimits(), on_cut: CutNote | None = None) -> EquipmentInfo:
    """The equipment's settings; its uuid must have passed identity_problem."""
    limit = limits.description
    return EquipmentInfo(
        uuid=str(item["equip_uuid"]).strip(),
        name=_description(item, "equip_nome", limit, on_cut),
        location=_description(item, "equip_local", limit, on_cut),
        status=_description(item, "equip_status", limit, on_cut),
        collect_interval_s=_int(item.get("equip_intervalo_coleta")),
        siren_active=_yes_no(item.get("equip_sirene_ativa")),
        # "sirete" is the client's spelling on the wire.
        siren_time_s=_int(item.get("equip_sirete_tempo", item.get("equip_sirene_tempo"))),
    )


def sensor_info(
    reading: dict, sensor_uuid: str, limits: FieldLimits = FieldLimits(), on_cut: CutNote | None = None
) -> SensorInfo:
    """The sensor's settings from one of its readings (descriptions cut to their bound, each cut noted)."""
    via_hub = reading.get("sensor_via_hub")
    limit = limits.description
    kind_key = "sensor_tipo" if "sensor_tipo" in reading else "tipo"
    hardware_id = _text(reading.get("sensor_id_hardware"))
    if hardware_id is not None and identity_problem("sensor_id_hardware", hardware_id, limits):
        # An identity is never cut; one that cannot be stored is left out (the reading is still good).
        hardware_id = None
        if on_cut is not None:
            on_cut(f"sensor_id_hardware: longer than {limits.identity} characters or not storable; left out")
    return SensorInfo(
        uuid=sensor_uuid,
        name=_description(reading, "sensor_nome", limit, on_cut),
        kind=_bounded(kind_key, canonical_kind(reading.get(kind_key)), limit, on_cut),
        unit=_description(reading, "sensor_unidade", limit, on_cut),
        status=_description(reading, "sensor_status", limit, on_cut),
        manufacturer=_description(reading, "sensor_fabricante", limit, on_cut),
        model=_description(reading, "sensor_modelo", limit, on_cut),
        firmware=_description(reading, "sensor_firmware", limit, on_cut),
        hardware_id=hardware_id,
        via_hub=via_hub if isinstance(via_hub, bool) else _yes_no(via_hub),
    )


class ReadingNormaliser:
    """Turns one raw reading into a Reading, or raises ReadingRejected with the reason.

    Naive times are the Home Assistant host's local time, read in the tenant's zone.
    """

    def __init__(
        self,
        tenant_zone: str,
        now: datetime,
        retention_days: int,
        future_tolerance_s: int,
        limits: FieldLimits = FieldLimits(),
    ) -> None:
        self.zone = ZoneInfo(tenant_zone)
        self.limits = limits
        self._storable_uuids: set[str] = set()
        self._storable_extras: set[tuple] = set()
        self.oldest = now - timedelta(days=retention_days)
        self.newest = now + timedelta(seconds=future_tolerance_s)
        # per field name: time as sent -> (UTC time, its ISO text, why it is refused or None)
        self._times: dict[str, dict[object, tuple]] = {"sensor_datahora_coleta": {}, "timestamp": {}}
        self._states: dict[str, dict[str, tuple | ReadingRejected]] = {"sensor_telemetria": {}, "valor": {}}
        # copy_line's memory: uuids as sent that need no stripping; a local second -> its UTC second when the whole
        # second lies inside the window, else None; a state text -> its value and state columns ("" if not good).
        self._clean_uuids: set[str] = set()
        self._utc_seconds: dict[str, str | None] = {}
        self._state_columns: dict[str, str] = {}
        self._extra_texts = _ExtraTexts({None: NULL})

    def time_window(self) -> tuple[datetime, datetime]:
        return self.oldest, self.newest

    def normalise(self, raw: object) -> Reading:
        """The reading; its sensor's settings are read with sensor_info(raw, reading.sensor_uuid)."""
        if not isinstance(raw, dict):
            raise ReadingRejected("reading is not an object")
        sensor_uuid = raw.get("sensor_uuid")
        if not isinstance(sensor_uuid, str) or not sensor_uuid.strip():
            raise ReadingRejected("sensor_uuid: missing or not a non-empty string")
        if sensor_uuid not in self._storable_uuids:
            # A batch has few sensors: each uuid as sent is checked once.
            problem = identity_problem("sensor_uuid", sensor_uuid.strip(), self.limits)
            if problem is not None:
                raise ReadingRejected(problem)
            if len(self._storable_uuids) < 100_000:
                self._storable_uuids.add(sensor_uuid)
        ts, ts_text = self._timestamp(raw)
        value, state = self._value(raw)
        extras = tuple(map(raw.get, _EXTRA_FIELDS))
        # Extras are almost always floats or null that fit a `real`, kept as they are, and repeat from reading
        # to reading; anything else goes through _extra, which reads text and rejects what a `real` cannot hold.
        # (The types are checked first: True == 1.0, so a boolean would match a remembered float, and a list or an
        # object cannot be looked up at all.)
        if not _FLOAT_OR_NONE.issuperset(map(type, extras)) or extras not in self._storable_extras:
            if _storable_reals(extras):
                if len(self._storable_extras) < 50_000:
                    self._storable_extras.add(extras)
            else:
                extras = tuple(map(_extra, _EXTRA_FIELDS, extras))
        return Reading(sensor_uuid.strip(), ts, ts_text, value, state, extras)

    def copy_line(self, raw: object) -> tuple[str, str] | None:
        """The sensor uuid and COPY columns (as copy_columns(normalise(raw)) gives them) of a reading in the client's
        usual shape, read fast: a naive microsecond time whose second lies inside the window, a good state text,
        extras that are floats or null. None for anything else, which normalise() reads by every rule."""
        if type(raw) is not dict:
            return None
        sensor_uuid = raw.get("sensor_uuid")
        stamp = raw.get("sensor_datahora_coleta")
        value = raw.get("sensor_telemetria")
        if type(sensor_uuid) is not str or type(stamp) is not str or type(value) is not str:
            return None
        if sensor_uuid not in self._clean_uuids and not self._clean_uuid(sensor_uuid):
            return None
        # "YYYY-MM-DDTHH:MM:SS.ffffff": the second is converted once, the microseconds are copied as they are
        # (isoformat() leaves out a zero fraction, so that one reads slowly).
        microseconds = stamp[20:]
        if len(stamp) != 26 or stamp[19] != "." or not stamp.isascii() or not microseconds.isdigit():
            return None
        local_second = stamp[:19]
        utc_second = self._utc_seconds.get(local_second, "")
        if utc_second == "":
            utc_second = self._utc_second(local_second)
        if utc_second is None or microseconds == "000000":
            return None
        columns = self._state_columns.get(value)
        if columns is None:
            columns = self._value_columns(value)
        if not columns:
            return None
        try:
            extras_text = "\t".join(map(self._extra_texts.__getitem__, _extras_of(raw)))
        except (KeyError, TypeError):  # an extra left out, or one that cannot be a dict key (a list, an object)
            return None
        # repr() writes |x| in [1e-4, 1e16) as plain decimals, which a real holds; exponents, inf and nan read slowly.
        if "e" in extras_text or "n" in extras_text:
            return None
        return sensor_uuid, f"{utc_second}.{microseconds}+00:00\t{columns}\t{extras_text}"

    def _clean_uuid(self, sensor_uuid: str) -> bool:
        if not sensor_uuid or sensor_uuid != sensor_uuid.strip():
            return False
        if identity_problem("sensor_uuid", sensor_uuid, self.limits) is not None:
            return False
        if len(self._clean_uuids) < 100_000:
            self._clean_uuids.add(sensor_uuid)
        return True

    def _utc_second(self, local_second: str) -> str | None:
        utc_second = None
        if _LOCAL_SECOND.fullmatch(local_second):
            try:
                local = datetime.fromisoformat(local_second)
            except ValueError:
                local = None
            if local is not None:
                # An offset changes only at whole seconds: the same one holds for the whole second.
                try:
                    start = local.replace(tzinfo=self.zone).astimezone(timezone.utc)
                except OverflowError:  # normalise() rejects it
                    start = None
                if start is not None and self.oldest <= start and start + _LAST_MICROSECOND <= self.newest:
                    utc_second = start.isoformat()[:19]
        if len(self._utc_seconds) < 200_000:
            self._utc_seconds[local_second] = utc_second
        return utc_second

    def _value_columns(self, value: str) -> str:
        """The value and state columns of a state text, or "" for one that normalise() skips or rejects."""
        try:
            number, state = self._state_value("sensor_telemetria", value, self.limits.state)
            columns = f"{copy_number(number)}\t{copy_text(state)}"
        except ReadingRejected:
            columns = ""
        if len(value) <= 64 and len(self._state_columns) < 100_000:
            self._state_columns[value] = columns
        return columns

    def _timestamp(self, raw: dict) -> tuple[datetime, str]:
        key = "sensor_datahora_coleta" if "sensor_datahora_coleta" in raw else "timestamp"
        stamp = raw.get(key)
        times = self._times[key]
        # Many readings share a time: each distinct one is parsed and checked once.
        cached = times.get(stamp) if isinstance(stamp, (str, int, float)) else None
        if cached is None:
            parsed = self._parse_time(key, stamp)
            text = parsed.isoformat()
            problem = (
                f"{key}: older than the raw-data retention ({text})"
                if parsed < self.oldest
                else f"{key}: more than 24 hours in the future ({text})"
                if parsed > self.newest
                else None
            )
            cached = (parsed, text, problem)
            if len(times) < 100_000:
                times[stamp] = cached
        if cached[2] is not None:
            raise ReadingRejected(cached[2])
        return cached[0], cached[1]

    def _parse_time(self, key: str, stamp: object) -> datetime:
        if isinstance(stamp, bool) or stamp is None:
            raise ReadingRejected(f"{key}: missing")
        if isinstance(stamp, (int, float)):
            if not math.isfinite(stamp) or not 0 <= stamp < 10_000_000_000:
                raise ReadingRejected(f"{key}: not a plausible epoch time: {stamp!r}")
            return datetime.fromtimestamp(stamp, timezone.utc)
        if not isinstance(stamp, str):
            raise ReadingRejected(f"{key}: not an ISO-8601 time")
        try:
            parsed = datetime.fromisoformat(stamp.strip())
        except ValueError:
            raise ReadingRejected(f"{key}: not an ISO-8601 time: {stamp[:64]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.zone)
        try:
            return parsed.astimezone(timezone.utc)
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            raise ReadingRejected(f"{key}: outside the times that can be stored: {stamp[:64]!r}") from None

    def _value(self, raw: dict) -> tuple[float | None, str | None]:
        field_name = "sensor_telemetria" if "sensor_telemetria" in raw else "valor"
        value: Any = raw.get(field_name)
        if field_name == "valor" and value is None and raw.get("status") is not None:
            value = raw.get("status")
        if type(value) is str:
            # States repeat a great deal ("on", "-18.25"): each distinct one is read once.
            states = self._states[field_name]
            known = states.get(value)
            if known is None:
                try:
                    known = self._state_value(field_name, value, self.limits.state)
                except ReadingRejected as rejection:
                    known = rejection
                if len(value) <= 64 and len(states) < 100_000:
                    states[value] = known
            if isinstance(known, ReadingRejected):
                raise ReadingRejected(known.reason, known.skipped)
            return known
        if isinstance(value, bool):
            return (1.0 if value else 0.0), ("on" if value else "off")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ReadingRejected(f"{field_name}: not a finite number")
            return float(value), None
        if value is None:
            raise ReadingRejected(f"{field_name}: missing", skipped=True)
        raise ReadingRejected(f"{field_name}: not a string or number")

    @staticmethod
    def _state_value(field_name: str, value: str, max_length: int) -> tuple[float | None, str | None]:
        text = value.strip()
        # Numbers first: most readings are numbers.
        if _DOT_NUMBER.fullmatch(text):
            number = float(text)
            if not math.isfinite(number):
                raise ReadingRejected(f"{field_name}: not a finite number: {text[:32]!r}")
            return number, None
        lowered = text.lower()
        if lowered in _SKIPPED_STATES:
            raise ReadingRejected(f"{field_name}: state {lowered or 'empty'!r}", skipped=True)
        if lowered in _ON_STATES:
            return 1.0, "on"
        if lowered in _OFF_STATES:
            return 0.0, "off"
        if _COMMA_NUMBER.fullmatch(text):
            return float(text.replace(",", ".")), None
        if lowered in _NON_FINITE:
            raise ReadingRejected(f"{field_name}: not a finite number: {text[:32]!r}")
        if len(text) > max_length:
            raise ReadingRejected(f"{field_name}: state text longer than {max_length} characters")
        if unstorable_text(text):
            raise ReadingRejected(
                f"{field_name}: holds characters that cannot be stored (NUL or an unpaired surrogate)"
            )
        return None, text
