"""A tenant's settings: its name, its time zone and the language of its notifications.

The time zone is how naive times in uploads are read. Readings already stored keep their instants, but a client
that resends naive times after a change would store them at shifted instants, so a change of zone is refused
(409) unless the body says `"confirm": true`. Viewers and admins may read the settings; only owners change them.
"""

from __future__ import annotations

import psycopg2

from easysmart import audit
from easysmart.accounts import AccountError, check_timezone
from easysmart.admin.bodies import BodyProblems
from easysmart.audit import Origin
from easysmart.authz import Role, require_role
from easysmart.db import Database, one_row
from easysmart.errors import ConflictError, NotFoundError
from easysmart.identity import Principal
from easysmart.params import iso

LANGUAGES = ("pt-BR", "en")
_MAX_NAME = 200


class TenantService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, principal: Principal) -> dict:
        require_role(principal, Role.VIEWER)
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT id, name, timezone, language, created_at FROM tenants WHERE id = %s", (principal.tenant_id,)
            )
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError("the token's tenant no longer exists")
        return _tenant(row)

    def update(self, principal: Principal, body: object, origin: Origin) -> dict:
        require_role(principal, Role.OWNER)
        problems = BodyProblems(body, ("name", "timezone", "language", "confirm"))
        name = problems.string("name", _MAX_NAME)
        zone = problems.string("timezone", 64)
        if zone is not None and not any(path == "$.timezone" for path, _ in problems.problems):
            try:
                check_timezone(zone)
            except AccountError as error:
                problems.add("$.timezone", error.message)
        language = problems.string("language", 8)
        if language is not None and language not in LANGUAGES:
            problems.add("$.language", f"must be one of {', '.join(LANGUAGES)}, not {language[:16]!r}")
        confirmed = problems.boolean("confirm")
        if not problems.problems and not {"name", "timezone", "language"} & set(problems.body):
            problems.add("$", "nothing to change; send name, timezone or language")
        problems.raise_if_any()
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT id, name, timezone, language, created_at FROM tenants WHERE id = %s FOR UPDATE",
                (principal.tenant_id,),
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError("the token's tenant no longer exists")
            before = _tenant(row)
            if zone is not None and zone != before["timezone"] and not confirmed:
                raise ConflictError(
                    f"changing the time zone from {before['timezone']} to {zone} shifts every naive time uploaded"
                    " from now on, including readings resent from before the change; send the same body with"
                    ' "confirm": true',
                    paths=["$.confirm"],
                )
            try:
                cursor.execute(
                    "UPDATE tenants SET name = coalesce(%s, name), timezone = coalesce(%s, timezone),"
                    " language = coalesce(%s, language) WHERE id = %s"
                    " RETURNING id, name, timezone, language, created_at",
                    (name, zone, language, principal.tenant_id),
                )
            except psycopg2.errors.UniqueViolation:
                raise ConflictError(f"the tenant name {name!r} is taken; choose another") from None
            after = _tenant(one_row(cursor))
            changes = {
                field: {"from": before[field], "to": after[field]}
                for field in ("name", "timezone", "language")
                if before[field] != after[field]
            }
            audit.record(
                cursor,
                principal,
                "tenant.update",
                "tenant",
                principal.tenant_id,
                changes,
                origin.request_id,
                origin.client_addr,
                origin.user_agent,
            )
            return after


def _tenant(row: tuple) -> dict:
    tenant_id, name, zone, language, created_at = row
    return {"id": str(tenant_id), "name": name, "timezone": zone, "language": language, "created_at": iso(created_at)}
