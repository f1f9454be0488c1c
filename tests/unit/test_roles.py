"""Roles: carried by access tokens, read by authz, and the users bodies' validation with paths (no network)."""

import uuid

import jwt
import pytest

from easysmart.admin.users import UserInvalidError, parse_new_user, parse_user_change
from easysmart.auth import PasswordChange
from easysmart.authz import Role, require_role, role_of
from easysmart.config import TokenSettings
from easysmart.errors import ForbiddenError, UnauthorizedError, UnprocessableError
from easysmart.identity import Principal, TokenService

SETTINGS = TokenSettings(jwt_secret="unit-test-secret-" + "r" * 48)
TOKENS = TokenService(SETTINGS)


def user(role: str | None) -> Principal:
    return Principal(str(uuid.uuid4()), str(uuid.uuid4()), "user", "someone", 3, role)


def test_the_role_travels_in_the_access_token():
    viewer = user("viewer")

    token = TOKENS.access_token(viewer)

    assert jwt.decode(token, options={"verify_signature": False})["role"] == "viewer"
    assert TOKENS.verify_access(token) == viewer


def test_a_user_token_signed_before_roles_is_an_owner_and_a_device_has_no_role():
    assert role_of(TOKENS.verify_access(TOKENS.access_token(user(None)))) == Role.OWNER
    assert role_of(Principal("a", "t", "device", "d", 1, None)) is None


def test_a_role_claim_that_is_not_a_string_is_401():
    claims = jwt.decode(TOKENS.access_token(user("admin")), options={"verify_signature": False})
    forged = jwt.encode({**claims, "role": ["owner"]}, SETTINGS.jwt_secret, algorithm="HS256")

    with pytest.raises(UnauthorizedError, match="role claim"):
        TOKENS.verify_access(forged)


@pytest.mark.parametrize(
    "role, least, allowed",
    [("viewer", Role.VIEWER, True), ("viewer", Role.ADMIN, False), ("admin", Role.ADMIN, True),
     ("admin", Role.OWNER, False), ("owner", Role.OWNER, True), ("emperor", Role.VIEWER, False)],
)  # fmt: skip
def test_require_role_names_the_missing_role(role, least, allowed):
    if allowed:
        require_role(user(role), least)
        return
    with pytest.raises(ForbiddenError) as refused:
        require_role(user(role), least)
    assert refused.value.details["required_role"] == least.name.lower()


def test_a_new_user_body_is_checked_with_paths():
    assert parse_new_user({"username": "carol", "role": "viewer"}) == ("carol", Role.VIEWER)
    with pytest.raises(UserInvalidError) as invalid:
        parse_new_user({"username": "a b", "role": 3, "password": "x"})
    assert invalid.value.details["paths"] == ["$.password", "$.username", "$.role"]


def test_a_change_body_needs_something_to_change_and_well_typed_fields():
    assert parse_user_change({"role": "admin", "blocked": False}) == {"role": "admin", "blocked": False}
    for body, paths in [
        ({}, ["$"]),
        ("role", ["$"]),
        ({"blocked": 1, "reset_password": "yes", "name": "x"}, ["$.name", "$.blocked", "$.reset_password"]),
    ]:
        with pytest.raises(UserInvalidError) as invalid:
            parse_user_change(body)
        assert invalid.value.details["paths"] == paths


def test_a_new_password_shorter_than_the_policy_is_422_with_its_path():
    with pytest.raises(UnprocessableError) as short:
        PasswordChange.from_body({"old_password": "whatever", "new_password": "short"})
    assert short.value.details["paths"] == ["$.new_password"]
