"""Query parameters and keyset cursors shared by the read APIs (analytics, alerts).

A bad parameter is a 400 naming it (`details.parameter`). Cursors are opaque to clients: base64 of a
JSON list whose first element tags the kind of request that issued it, so a cursor of one endpoint
is refused by another.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone

import orjson

from easysmart.errors import BadRequestError, NotFoundError

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
# Times a request may name: far enough either side of any stored reading, and far enough from
# datetime's limits that a window derived from them never overflows.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def bad_parameter(parameter: str, message: str) -> BadRequestError:
    return BadRequestError(f"{parameter}: {message}", parameter=parameter)


def parse_time(parameter: str, raw: str) -> datetime:
    """An ISO-8601 time between EARLIEST and LATEST; a naive one is read as UTC."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise bad_parameter(parameter, f"not an ISO-8601 time: {raw[:64]!r}") from None
    if not EARLIEST <= value <= LATEST:
        raise bad_parameter(
            parameter, f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, not {value.isoformat()}"
        )
    return value


def parse_window(args) -> tuple[datetime | None, datetime | None]:
    """`start_date` and `end_date` when given, the start before the end."""
    start = parse_time("start_date", args["start_date"]) if args.get("start_date") else None
    end = parse_time("end_date", args["end_date"]) if args.get("end_date") else None
    if start is not None and end is not None and start >= end:
        raise bad_parameter("start_date", "must be before end_date")
    return start, end


def json_type_name(value: object) -> str:
    """What a JSON value is, in the words a 422 uses ("must be a string, not an array")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_int(parameter: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(parameter, f"not an integer: {raw!r}") from None
    if not low <= value <= high:
        raise bad_parameter(parameter, f"must be between {low} and {high}, not {value}")
    return value


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT) -> int:
    return parse_int("limit", raw, default, 1, MAX_LIMIT)


def encode_cursor(tag: str, *values: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([tag, *values])).decode().rstrip("=")


def decode_cursor(raw: str | None, tag: str, types: tuple[type, ...]) -> tuple | None:
    """The values of a cursor this kind of request issued (a leading str is a time), or 400 naming `cursor`."""
    if not raw:
        return None
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad_parameter("cursor", "not a cursor issued by this endpoint") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != len(types) + 1
        or decoded[0] != tag
        or not all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(decoded[1:], types))
    ):
        raise bad_parameter("cursor", "not a cursor issued by this endpoint")
    values = tuple(decoded[1:])
    if types and types[0] is str:
        values = (parse_time("cursor", values[0]), *values[1:])
    return values


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def newest_first_after(time_column: str, id_column: str) -> str:
    """The keyset condition of a page ordered by `time_column` descending, then `id_column` (a uuid) ascending,
    after the row of %(after_time)s and %(after_id)s: no row comparison fits the mixed order; the first term
    bounds the index scan."""
    return f"{time_column} <= %(after_time)s AND ({time_column} < %(after_time)s OR {id_column} > %(after_id)s::uuid)"


def cursor_uuid(raw: str) -> str:
    """A uuid a cursor carries (as text); 400 naming `cursor` when it is not one."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise bad_parameter("cursor", "not a cursor issued by this endpoint") from None


def path_uuid(what: str, raw: str) -> str:
    """The uuid of a path segment; anything else names nothing the tenant has (404, like another tenant's id)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFoundError(f"{what} {raw[:64]} not found") from None
