"""auth's metrics against the real PostgreSQL and Redis: each login and refresh outcome, lockouts and reuse
detections move their counter of easysmart.metrics by one."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY
from support.clock import SetClock

from easysmart.auth import REFRESH_RETRY_S, AuthService, Credentials
from easysmart.config import LoginSettings
from easysmart.errors import RateLimitedError, UnauthorizedError
from easysmart.identity import TokenService
from easysmart.ratelimit import RateLimiter

LOGINS = ("success", "failure", "locked", "throttled", "rate_limited")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moved:
    """How far the login outcomes, lockouts, refresh outcomes and reuse detections moved since this was made."""

    def __init__(self) -> None:
        self._before = self._now()

    @staticmethod
    def _now() -> dict[str, float]:
        samples = {f"login {o}": value("esm_auth_logins_total", outcome=o) for o in LOGINS}
        samples["lockouts"] = value("esm_auth_lockouts_total")
        samples |= {f"refresh {o}": value("esm_auth_refreshes_total", outcome=o) for o in ("success", "failure")}
        samples["reuses"] = value("esm_auth_refresh_reuse_detections_total")
        return samples

    def __call__(self) -> dict[str, float]:
        """Only the samples that moved."""
        return {name: now - self._before[name] for name, now in self._now().items() if now != self._before[name]}


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


def service(database, token_settings, clock, settings: LoginSettings, limiter: RateLimiter | None = None):
    return AuthService(database, TokenService(token_settings, clock), settings, limiter)


def login(auth: AuthService, account, address: str, password: str | None = None) -> dict:
    return auth.login(Credentials(account.username, password or account.password), account.kind, address)


def test_a_success_and_a_failure_count_once_each(database, token_settings, clock, login_settings, make_account):
    auth, account = service(database, token_settings, clock, login_settings), make_account("device")
    moved = Moved()

    login(auth, account, "10.9.0.1")
    with pytest.raises(UnauthorizedError):
        login(auth, account, "10.9.0.1", password="wrong-password")

    assert moved() == {"login success": 1, "login failure": 1}


def test_the_failure_that_locks_a_pair_counts_a_lockout_and_the_next_attempt_counts_locked(
    database, token_settings, clock, login_settings, make_account
):
    auth, account = service(database, token_settings, clock, login_settings), make_account("device")
    for _ in range(login_settings.login_max_failures - 1):
        with pytest.raises(UnauthorizedError):
            login(auth, account, "10.9.0.2", password="wrong-password")
    moved = Moved()

    with pytest.raises(UnauthorizedError):
        login(auth, account, "10.9.0.2", password="wrong-password")
    with pytest.raises(RateLimitedError):
        login(auth, account, "10.9.0.2")

    assert moved() == {"login failure": 1, "lockouts": 1, "login locked": 1}


def test_a_username_slowed_down_from_any_address_counts_throttled(database, token_settings, clock, make_account):
    settings = LoginSettings(login_username_max_failures=2, login_throttle_max_s=4)
    auth, account = service(database, token_settings, clock, settings), make_account("user")
    for number in range(2):
        with pytest.raises(UnauthorizedError):
            login(auth, account, f"10.9.1.{number}", password="wrong-password")
    moved = Moved()

    with pytest.raises(RateLimitedError):
        login(auth, account, "10.9.1.9")

    assert moved() == {"login throttled": 1}


def test_an_address_past_the_login_rate_limit_counts_rate_limited(
    database, token_settings, clock, redis_client, make_account
):
    settings = LoginSettings(login_ratelimit_per_minute=1)
    auth = service(database, token_settings, clock, settings, RateLimiter(redis_client))
    account, address = make_account("device"), f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    login(auth, account, address)
    moved = Moved()

    with pytest.raises(RateLimitedError):
        login(auth, account, address)

    assert moved() == {"login rate_limited": 1}


def test_a_refresh_a_reuse_and_a_bad_token_count_their_outcomes(
    database, token_settings, clock, login_settings, make_account
):
    auth, account = service(database, token_settings, clock, login_settings), make_account("user")
    first = login(auth, account, "10.9.2.1")
    moved = Moved()

    auth.refresh(first["refresh_token"])
    clock.advance(REFRESH_RETRY_S + 1)
    with pytest.raises(UnauthorizedError, match="already used"):
        auth.refresh(first["refresh_token"])
    with pytest.raises(UnauthorizedError):
        auth.refresh("not-a-token")

    assert moved() == {"refresh success": 1, "refresh failure": 2, "reuses": 1}
