"""Equipment as a tenant's admins see and correct it.

Uploads write `name` and `location` as the client reports them; a name or location set here is a display override
kept in columns of its own (`display_name`, `display_location`), so a later upload never overwrites it, and the
analytics list and alert notifications show it instead (null clears it). A retired equipment (`retired: true`) is
hidden from the analytics list and from silence rules, stays retired while uploads continue, and keeps its data.
The list here shows every equipment, retired too, with both the reported and the displayed values.
"""

from __future__ import annotations

from typing import Mapping

from easysmart import audit
from easysmart.admin.bodies import BodyProblems
from easysmart.audit import Origin
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.db import Database
from easysmart.errors import NotFoundError
from easysmart.identity import Principal
from easysmart.params import decode_cursor, encode_cursor, iso, parse_limit

_MAX_TEXT = 200
_EQUIPMENT_PAGE = 100
_COLUMNS = "id, uuid, name, location, display_name, display_location, status, retired_at, created_at, updated_at"


class EquipmentService:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    def list(self, principal: Principal, args: Mapping[str, str]) -> dict:
        require_role(principal, Role.VIEWER)
        limit = parse_limit(args.get("limit"), _EQUIPMENT_PAGE)
        after = decode_cursor(args.get("cursor"), "ae", (int,))
        with self.db.transaction() as cursor:
            cursor.execute(
                f"SELECT {_COLUMNS} FROM equipment WHERE tenant_id = %s AND id > %s ORDER BY id LIMIT %s",
                (principal.tenant_id, after[0] if after else 0, limit + 1),
            )
            rows = cursor.fetchall()
        page, more = rows[:limit], len(rows) > limit
        return {
            "equipment": [_equipment(row) for row in page],
            "next_cursor": encode_cursor("ae", page[-1][0]) if more else None,
        }

    def update(self, principal: Principal, equipment_uuid: str, body: object, origin: Origin) -> dict:
        require_role(principal, Role.ADMIN)
        problems = BodyProblems(body, ("name", "location", "retired"))
        changes: dict[str, object] = {}
        for field, column in (("name", "display_name"), ("location", "display_location")):
            value = problems.string(field, _MAX_TEXT, nullable=True)
            if field in problems.body:
                changes[column] = value
        retired = problems.boolean("retired")
        if not problems.problems and not problems.body:
            problems.add("$", "nothing to change; send name, location or retired")
        problems.raise_if_any()
        assignments = [f"{column} = %({column})s" for column in changes]
        if retired is not None:
            # Retiring again keeps the first retirement's time.
            assignments.append("retired_at = CASE WHEN %(retired)s THEN coalesce(retired_at, %(now)s) END")
        with self.db.transaction() as cursor:
            cursor.execute(
                f"UPDATE equipment SET {', '.join(assignments)}, updated_at = %(now)s"
                f" WHERE tenant_id = %(tenant)s AND uuid = %(uuid)s RETURNING {_COLUMNS}",
                {
                    **changes,
                    "retired": retired,
                    "now": self.clock(),
                    "tenant": principal.tenant_id,
                    "uuid": equipment_uuid,
                },
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError(f"equipment {equipment_uuid[:64]} not found")
            audit.record(
                cursor,
                principal,
                "equipment.update",
                "equipment",
                equipment_uuid,
                {name: problems.body[name] for name in ("name", "location", "retired") if name in problems.body},
                origin.request_id,
                origin.client_addr,
                origin.user_agent,
            )
        return _equipment(row)


def _equipment(row: tuple) -> dict:
    _, uuid, name, location, display_name, display_location, status, retired_at, created_at, updated_at = row
    return {
        "equipment_uuid": uuid,
        "name": display_name if display_name is not None else name,
        "location": display_location if display_location is not None else location,
        "reported_name": name,
        "reported_location": location,
        "name_override": display_name,
        "location_override": display_location,
        "status": status,
        "retired": retired_at is not None,
        "retired_at": iso(retired_at),
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
    }
