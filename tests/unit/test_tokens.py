import time

import jwt
import pytest

from easysmart.auth import Principal, TokenService, bearer_principal, hash_password, verify_password
from easysmart.config import Settings
from easysmart.errors import UnauthorizedError

SETTINGS = Settings(database_url="", redis_url="", kafka_bootstrap_servers="", s3_endpoint_url="", s3_access_key_id="",
                    s3_secret_access_key="", jwt_secret="unit-test-secret-unit-test-secret")
TOKENS = TokenService(SETTINGS)
DEVICE = Principal("acc-1", "ten-1", "device", "dev")


def test_passwords_are_salted_and_verified():
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("pw", first) and not verify_password("other", first)
    assert not verify_password("pw", "garbage")


def test_access_token_carries_the_principal_and_every_required_claim():
    token = TOKENS.access_token(DEVICE)
    assert TOKENS.verify_access(token) == DEVICE
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"sub", "tenant", "acct", "type", "iat", "exp", "jti", "iss", "aud"} <= set(claims)


def test_refresh_token_is_not_an_access_token():
    with pytest.raises(UnauthorizedError, match="refresh"):
        TOKENS.verify_access(TOKENS.refresh_token(DEVICE, "ab" * 16))


@pytest.mark.parametrize("token", [
    jwt.encode({"sub": "x"}, "unit-test-secret-unit-test-secret", algorithm="HS256"),
    jwt.encode({"sub": "acc-1", "tenant": "t", "acct": "device", "type": "access", "iat": 1, "exp": int(time.time()) + 60,
                "jti": "j", "iss": "easysmart", "aud": "easysmart-api"}, "another-key-another-key-another-key", algorithm="HS256"),
    jwt.encode({"sub": "acc-1", "tenant": "t", "acct": "device", "type": "access", "iat": 1, "exp": 2, "jti": "j",
                "iss": "easysmart", "aud": "easysmart-api"}, "unit-test-secret-unit-test-secret", algorithm="HS256"),
    jwt.encode({"sub": "acc-1", "tenant": "t", "acct": "device", "type": "access", "iat": 1, "exp": int(time.time()) + 60,
                "jti": "j", "iss": "easysmart", "aud": "easysmart-api"}, None, algorithm="none"),
    "not-a-jwt",
])
def test_bad_tokens_are_refused(token):
    with pytest.raises(UnauthorizedError):
        TOKENS.verify_access(token)


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer ", "Bearer"])
def test_missing_or_malformed_authorization_header_is_401(header):
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(UnauthorizedError):
        bearer_principal(headers, TOKENS)
