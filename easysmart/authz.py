"""Who may do what inside a tenant.

Each user account has a role in its tenant (accounts.role: owner, admin, viewer), carried in its access token
(`role` claim); devices have none. Routes ask for the least role they need through `require_role`. A role change
bumps the account's version (easysmart.accountstate), so a token with the old role is refused on its next request.
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


ROLE_NAMES = tuple(role.name.lower() for role in Role)


def role_of(principal: Principal) -> Role | None:
    """The principal's role in its tenant; devices have none. A user's token without a role was signed before roles
    existed, when every user was its tenant's owner (a role change since would have bumped its version)."""
    if principal.kind != "user":
        return None
    if principal.role is None:
        return Role.OWNER
    return Role.__members__.get(principal.role.upper())


def require_role(principal: Principal, least: Role) -> None:
    role = role_of(principal)
    if role is None or role < least:
        raise ForbiddenError(
            f"this needs the {least.name.lower()} role (or higher) in the tenant", required_role=least.name.lower()
        )
