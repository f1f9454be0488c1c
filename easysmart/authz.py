"""Who may do what inside a tenant.

Roles per user account (owner, admin, viewer) come with the accounts API; until then every user account is
its tenant's owner. Routes ask for the least role they need through `require_role`, so the roles, once
stored and carried in the token, take effect without touching the routes.
"""

from __future__ import annotations

from enum import IntEnum

from easysmart.errors import ForbiddenError
from easysmart.identity import Principal


class Role(IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1
    ADMIN = 2
    OWNER = 3


def role_of(principal: Principal) -> Role | None:
    """The principal's role in its tenant; devices have none."""
    return Role.OWNER if principal.kind == "user" else None


def require_role(principal: Principal, least: Role) -> None:
    role = role_of(principal)
    if role is None or role < least:
        raise ForbiddenError(f"this needs the {least.name.lower()} role (or higher) in the tenant")
