"""JWTs: the claims issued, and every way a token must fail verification (no network)."""

import base64
import json
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import jwt
import pytest
from support.clock import SetClock

from easysmart.auth import Credentials, refresh_token_from_body
from easysmart.config import ConfigError, TokenSettings
from easysmart.errors import BadRequestError, UnauthorizedError
from easysmart.identity import Principal, TokenService, bearer_principal

SECRET = "unit-test-secret-" + "x" * 48
SETTINGS = TokenSettings(jwt_secret=SECRET)
DEVICE = Principal(str(uuid.uuid4()), str(uuid.uuid4()), "device", "dev-1")
USER = Principal(str(uuid.uuid4()), str(uuid.uuid4()), "user", "admin-1")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> SetClock:
    return SetClock(NOW)


@pytest.fixture
def tokens(clock) -> TokenService:
    return TokenService(SETTINGS, clock)


def _claims(**overrides) -> dict:
    now = int(NOW.timestamp())
    claims = {
        "sub": DEVICE.account_id,
        "tenant": DEVICE.tenant_id,
        "acct": "device",
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _rejection(tokens: TokenService, token: str) -> str:
    with pytest.raises(UnauthorizedError) as raised:
        tokens.verify_access(token)
    assert raised.value.status == 401
    return raised.value.message


def test_an_issued_access_token_verifies_to_its_principal(tokens):
    pair = tokens.issue_pair(DEVICE)

    assert tokens.verify_access(pair["access_token"]) == DEVICE
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 15 * 60


def test_issued_tokens_carry_every_claim(tokens):
    pair = tokens.issue_pair(USER, refresh_jti="ab" * 16)

    access = jwt.decode(pair["access_token"], options={"verify_signature": False})
    refresh = jwt.decode(pair["refresh_token"], options={"verify_signature": False})

    for claims, kind in ((access, "access"), (refresh, "refresh")):
        assert {"sub", "tenant", "acct", "type", "iat", "exp", "jti", "iss", "aud"} <= set(claims)
        assert (claims["sub"], claims["tenant"], claims["acct"], claims["type"]) == (
            USER.account_id,
            USER.tenant_id,
            "user",
            kind,
        )
        assert (claims["iss"], claims["aud"]) == ("easysmart", "easysmart-api")
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 7 * 86400
    assert refresh["jti"] == "ab" * 16
    assert access["jti"] != refresh["jti"]
    assert jwt.get_unverified_header(pair["access_token"])["alg"] == "HS256"


def test_device_refresh_tokens_last_thirty_days(tokens):
    refresh = jwt.decode(tokens.issue_pair(DEVICE)["refresh_token"], options={"verify_signature": False})

    assert refresh["exp"] - refresh["iat"] == 30 * 86400


def test_an_expired_token_is_refused(tokens):
    now = int(NOW.timestamp())
    token = jwt.encode(_claims(iat=now - 7200, exp=now - 3600), SECRET, algorithm="HS256")

    assert _rejection(tokens, token) == "the token has expired"


def test_a_token_is_accepted_until_the_second_it_expires(clock):
    tokens = TokenService(replace(SETTINGS, access_token_ttl_s=60), clock)
    token = tokens.access_token(DEVICE)

    clock.advance(59.9)
    assert tokens.verify_access(token) == DEVICE
    clock.advance(0.1)
    assert _rejection(tokens, token) == "the token has expired"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_a_token_from_the_future_is_refused(tokens, claim):
    token = jwt.encode(_claims(**{claim: int(NOW.timestamp()) + 60}), SECRET, algorithm="HS256")

    assert _rejection(tokens, token) == "the token is not valid yet"


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
def test_a_token_whose_time_is_not_a_number_is_refused(tokens, claim):
    token = jwt.encode(_claims(**{claim: "soon"}), SECRET, algorithm="HS256")

    assert _rejection(tokens, token) == f"the token is not valid: its {claim} claim must be an integer"


def test_tokens_are_issued_at_the_clocks_time(tokens):
    access = jwt.decode(tokens.access_token(DEVICE), options={"verify_signature": False})

    assert access["iat"] == int(NOW.timestamp())


def test_an_alg_none_token_is_refused(tokens):
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims())}."

    assert "algorithm" in _rejection(tokens, token)


def test_a_token_signed_with_another_key_is_refused(tokens):
    token = jwt.encode(_claims(), "another-key-entirely-" * 3, algorithm="HS256")

    assert _rejection(tokens, token) == "the token's signature is not valid"


def test_a_token_with_another_hmac_algorithm_is_refused(tokens):
    token = jwt.encode(_claims(), SECRET, algorithm="HS512")

    assert "only HS256" in _rejection(tokens, token)


def test_a_refresh_token_is_never_an_access_token(tokens):
    refresh = tokens.issue_pair(DEVICE)["refresh_token"]

    assert _rejection(tokens, refresh) == "a refresh token cannot be used as an access token"


def test_an_access_token_is_never_a_refresh_token(tokens):
    access = tokens.issue_pair(DEVICE)["access_token"]

    with pytest.raises(UnauthorizedError, match="an access token cannot be used as a refresh token"):
        tokens.verify_refresh(access)


@pytest.mark.parametrize("claim", ["sub", "tenant", "acct", "type", "iat", "exp", "jti", "iss", "aud"])
def test_a_token_missing_a_claim_is_refused(tokens, claim):
    token = jwt.encode(_claims(**{claim: None}), SECRET, algorithm="HS256")

    assert claim in _rejection(tokens, token)


def test_a_token_for_another_issuer_or_audience_is_refused(tokens):
    assert "issuer" in _rejection(tokens, jwt.encode(_claims(iss="someone-else"), SECRET, algorithm="HS256"))
    assert "audience" in _rejection(tokens, jwt.encode(_claims(aud="other-api"), SECRET, algorithm="HS256"))


def test_a_token_naming_an_unknown_account_type_is_refused(tokens):
    token = jwt.encode(_claims(acct="robot"), SECRET, algorithm="HS256")

    assert "account type" in _rejection(tokens, token)


def test_garbage_is_refused(tokens):
    for token in ("", "abc", "a.b.c", "x" * 500):
        _rejection(tokens, token)


def test_bearer_principal_reads_the_authorization_header(tokens):
    token = tokens.access_token(DEVICE)

    assert bearer_principal({"Authorization": f"Bearer {token}"}, tokens) == DEVICE
    assert bearer_principal({"authorization": f"bearer  {token} "}, tokens) == DEVICE


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing Authorization header"),
        ({"Authorization": ""}, "missing Authorization header"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "must be 'Bearer <access token>'"),
        ({"Authorization": "Bearer"}, "must be 'Bearer <access token>'"),
        ({"Authorization": "Bearer   "}, "missing Authorization header|must be 'Bearer"),
    ],
)
def test_bearer_principal_says_what_is_wrong_with_the_header(tokens, headers, message):
    with pytest.raises(UnauthorizedError, match=message):
        bearer_principal(headers, tokens)


@pytest.mark.parametrize(
    "body, field, message",
    [
        ([], "username", "JSON object"),
        ({}, "username", "username: required"),
        ({"username": "a"}, "password", "password: required"),
        ({"username": 5, "password": "p"}, "username", "username: must be a string, not int"),
        ({"username": "a", "password": None}, "password", "password: must be a string, not NoneType"),
        ({"username": "", "password": "p"}, "username", "username: must not be empty"),
        ({"username": "a", "password": "p" * 1025}, "password", "longer than 1024"),
    ],
)
def test_credentials_name_the_bad_field(body, field, message):
    with pytest.raises(BadRequestError, match=message) as raised:
        Credentials.from_body(body)

    assert raised.value.details["field"] == field
    assert raised.value.status == 400


def test_the_refresh_body_needs_a_refresh_token():
    assert refresh_token_from_body({"refresh_token": "t"}) == "t"
    with pytest.raises(BadRequestError, match="refresh_token: required"):
        refresh_token_from_body({"token": "t"})


@pytest.mark.parametrize(
    ("secret", "message"),
    [("x" * 31, "at least 32 bytes"), ("change-me-to-at-least-32-random-bytes-please", "published example")],
)
def test_a_short_or_published_jwt_secret_refuses_to_start(secret, message):
    with pytest.raises(ConfigError, match=message):
        TokenService(TokenSettings(jwt_secret=secret))


def test_an_access_token_carries_the_account_version_and_one_without_stands_for_the_first(tokens):
    changed = replace(DEVICE, version=7)

    assert tokens.verify_access(tokens.issue_pair(changed)["access_token"]).version == 7
    legacy = jwt.encode(_claims(), SECRET, algorithm="HS256")  # signed before versions existed
    assert tokens.verify_access(legacy).version == 1
    with pytest.raises(UnauthorizedError, match="ver claim must be an integer"):
        tokens.verify_access(jwt.encode(_claims(ver="seven"), SECRET, algorithm="HS256"))


def test_the_same_refresh_jti_and_issue_time_sign_the_same_pair_again(tokens, clock):
    issued_at = int(NOW.timestamp())
    first = tokens.issue_pair(DEVICE, "a" * 32, issued_at=issued_at)
    clock.advance(20)

    again = tokens.issue_pair(DEVICE, "a" * 32, issued_at=issued_at)

    assert again == first
    assert tokens.issue_pair(DEVICE, "b" * 32, issued_at=issued_at)["access_token"] != first["access_token"]


@pytest.fixture
def signature_checks(monkeypatch) -> list[str]:
    """The tokens PyJWT verified (signature and claims), in order."""
    checked: list[str] = []
    verify = jwt.decode

    def counted(token, *args, **kwargs):
        checked.append(token)
        return verify(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counted)
    return checked


def test_an_access_token_used_again_is_not_verified_again(tokens, signature_checks):
    token = tokens.access_token(DEVICE)

    assert tokens.verify_access(token) == DEVICE
    assert tokens.verify_access(token) == DEVICE
    assert signature_checks == [token]


def test_a_kept_token_is_refused_from_the_second_it_expires(clock, signature_checks):
    tokens = TokenService(replace(SETTINGS, access_token_ttl_s=60), clock)
    token = tokens.access_token(DEVICE)
    assert tokens.verify_access(token) == DEVICE

    clock.advance(59.9)
    assert tokens.verify_access(token) == DEVICE
    clock.advance(0.1)
    assert _rejection(tokens, token) == "the token has expired"
    assert signature_checks == [token]  # refused as kept, by its expiry alone
    assert _rejection(tokens, token) == "the token has expired"


def test_a_token_signed_with_another_key_is_never_kept(tokens, signature_checks):
    forged = jwt.encode(_claims(), "another-key-entirely-" * 3, algorithm="HS256")

    assert _rejection(tokens, forged) == "the token's signature is not valid"
    assert _rejection(tokens, forged) == "the token's signature is not valid"
    assert signature_checks == [forged, forged]


def test_a_refused_token_is_never_kept(tokens, signature_checks):
    refresh = tokens.issue_pair(DEVICE)["refresh_token"]

    assert _rejection(tokens, refresh) == "a refresh token cannot be used as an access token"
    assert _rejection(tokens, refresh) == "a refresh token cannot be used as an access token"
    assert signature_checks == [refresh, refresh]


def test_only_the_most_recently_used_tokens_are_kept(clock, signature_checks):
    tokens = TokenService(SETTINGS, clock, verified_tokens_kept=2)
    first, second, third = (tokens.access_token(replace(DEVICE, username=f"dev-{n}")) for n in range(3))
    tokens.verify_access(first)
    tokens.verify_access(second)
    tokens.verify_access(first)  # now the most recently used of the two
    tokens.verify_access(third)  # the cache is full: second, the least recently used, leaves

    signature_checks.clear()
    tokens.verify_access(first)
    tokens.verify_access(third)
    tokens.verify_access(second)

    assert signature_checks == [second]
