"""Token-bucket rate limits in Redis, checked atomically for several keys by one Lua script."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import redis

from easysmart.errors import RateLimitedError
from easysmart.flusher import PeriodicFlusher

logger = logging.getLogger(__name__)

# Every bucket is refilled continuously at limit/60 tokens per second up to `limit` tokens.
# All buckets must allow the request, and only then is a token taken from each.
_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local n = #KEYS
local tokens = {}
local worst_wait, worst_index = 0, 0
for i = 1, n do
  local capacity = tonumber(ARGV[i])
  local rate = capacity / 60000.0
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local t = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now_ms
  t = math.min(capacity, t + math.max(0, now_ms - ts) * rate)
  tokens[i] = t
  if t < 1 then
    local wait = math.ceil((1 - t) / rate)
    if wait > worst_wait then worst_wait, worst_index = wait, i end
  end
end
local allowed = worst_index == 0
local result = {allowed and 1 or 0, worst_index, worst_wait}
for i = 1, n do
  local capacity = tonumber(ARGV[i])
  if allowed then tokens[i] = tokens[i] - 1 end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', now_ms)
  redis.call('PEXPIRE', KEYS[i], 60000 + 1000)
  table.insert(result, tostring(tokens[i]))
end
return result
"""


@dataclass(frozen=True)
class Limit:
    name: str
    key: str
    per_minute: int


class RateLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(_SCRIPT)

    def check(self, limits: list[Limit]) -> dict[str, str]:
        """Takes one token from every limit or raises RateLimitedError; returns RateLimit-* headers.

        Redis being down lets requests through (logged): losing uploads is worse than a
        missing limit for a moment.
        """
        try:
            result = self._script(
                keys=[f"ratelimit:{limit.key}" for limit in limits], args=[limit.per_minute for limit in limits]
            )
        except redis.RedisError as error:
            logger.warning("rate limiting skipped, Redis unavailable: %s", error)
            return {}
        return self._answer(limits, result)

    def check_and_read(
        self,
        limits: list[Limit],
        key: str,
        inspect: Callable[[dict | None], None],
        budget_check: BudgetCheck | None = None,
    ) -> dict[str, str]:
        """check(), with the hash at `key` read in the same round trip and given to `inspect` before the limits
        answer (so `inspect` may refuse first): {} when there is no such hash, None when Redis is down. With
        budget_check, that device's decompression budget is read in the same round trip and refuses after the
        limits."""
        keys, args = [f"ratelimit:{limit.key}" for limit in limits], [limit.per_minute for limit in limits]
        budget = budget_check.budget if budget_check is not None and budget_check.budget.enabled else None
        balance: float | None = None
        try:
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                pipe.hgetall(key)
                if budget is not None and budget_check is not None:
                    budget.queue(pipe, budget_check.account_id, 0)
                result, fields, *rest = pipe.execute()
                balance = float(rest[0]) if rest else None
            except redis.exceptions.NoScriptError:
                # A Redis that restarted has forgotten the scripts: loaded by the plain calls.
                result, fields = self._script(keys=keys, args=args), self.client.hgetall(key)
                if budget is not None and budget_check is not None:
                    balance = budget.apply(budget_check.account_id, 0)
        except redis.RedisError as error:
            logger.warning("rate limiting skipped, Redis unavailable: %s", error)
            inspect(None)
            return {}
        inspect(fields)
        headers = self._answer(limits, result)
        if budget is not None:
            budget.refuse_if_spent(balance)
        return headers

    @staticmethod
    def _answer(limits: list[Limit], result: list) -> dict[str, str]:
        allowed, worst_index, wait_ms = int(result[0]), int(result[1]), int(result[2])
        remaining = [float(value) for value in result[3:]]
        # Report the tightest bucket.
        tightest = min(range(len(limits)), key=lambda i: remaining[i] / limits[i].per_minute)
        limit = limits[tightest]
        headers = {
            "RateLimit-Limit": str(limit.per_minute),
            "RateLimit-Remaining": str(max(0, math.floor(remaining[tightest]))),
            "RateLimit-Reset": str(math.ceil((limit.per_minute - remaining[tightest]) * 60 / limit.per_minute)),
        }
        if not allowed:
            retry_after = max(1, math.ceil(wait_ms / 1000))
            blocked = limits[worst_index - 1]
            headers["RateLimit-Remaining"] = "0"
            headers["RateLimit-Reset"] = str(retry_after)
            headers["RateLimit-Limit"] = str(blocked.per_minute)
            raise RateLimitedError(
                f"rate limit of {blocked.per_minute} uploads per minute per {blocked.name}"
                f" exceeded; retry in {retry_after} s",
                retry_after_s=retry_after,
                headers=headers,
                limit=blocked.name,
            )
        return headers


# A balance of bytes refilled continuously at capacity/3600 per second up to `capacity`. A charge may
# take it below zero (process learns an upload's full size only after decompressing it), down to
# -capacity, so a device is refused for at most an hour after its most expensive upload.
_BUDGET_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = capacity / 3600000.0
local state = redis.call('HMGET', KEYS[1], 'balance', 'ts')
local balance = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now_ms
balance = math.min(capacity, balance + math.max(0, now_ms - ts) * rate)
balance = math.max(-capacity, balance - tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'balance', tostring(balance), 'ts', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - balance) / rate) + 1000)
return tostring(balance)
"""


@dataclass(frozen=True)
class BudgetCheck:
    """A device's decompression budget, to be checked in the rate limits' round trip."""

    budget: DecompressionBudget
    account_id: str


class DecompressionBudget:
    """Decompressed bytes a device account's uploads may cost per hour (Redis, shared by ingest and process).

    Ingest checks it before reading an upload and charges what it decompressed; process charges the rest
    of the upload once it knows it. A device whose budget is spent is refused (429) until it refills.
    Redis being down lets uploads through (logged), as the rate limiter does.
    """

    def __init__(self, client: redis.Redis, bytes_per_hour: int) -> None:
        self.client = client
        self.bytes_per_hour = bytes_per_hour
        self._script = client.register_script(_BUDGET_SCRIPT)

    @property
    def enabled(self) -> bool:
        return self.bytes_per_hour > 0

    def check(self, account_id: str) -> None:
        """Raises RateLimitedError while the account's budget is spent."""
        self.refuse_if_spent(self.apply(account_id, 0))

    def refuse_if_spent(self, balance: float | None) -> None:
        """RateLimitedError when `balance` (None: unknown, Redis down) is spent."""
        if balance is None or balance > 0:
            return
        retry_after = max(1, math.ceil(-balance * 3600 / self.bytes_per_hour))
        raise RateLimitedError(
            f"this device's uploads decompressed more than {self.bytes_per_hour} bytes in the last hour;"
            f" retry in {retry_after} s",
            retry_after_s=retry_after,
            headers={},
            limit="decompression budget",
        )

    def charge(self, account_id: str, decompressed_bytes: int) -> None:
        self.apply(account_id, decompressed_bytes)

    def apply(self, account_id: str, amount: int) -> float | None:
        """Charges `amount` (0: reads) and returns the balance; None when disabled or Redis is down."""
        if not self.enabled:
            return None
        try:
            return float(self._script(keys=[_budget_key(account_id)], args=[self.bytes_per_hour, amount]))
        except redis.RedisError as error:
            logger.warning("decompression budget skipped, Redis unavailable: %s", error)
            return None

    def queue(self, pipe: redis.client.Pipeline, account_id: str, amount: int) -> None:
        """apply() as one command of another round trip's pipeline (NoScriptError when Redis forgot the script)."""
        pipe.evalsha(self._script.sha, 1, _budget_key(account_id), self.bytes_per_hour, amount)


def _budget_key(account_id: str) -> str:
    return f"ratelimit:inflated:{account_id}"


class DeferredCharges(PeriodicFlusher):
    """Charges to a decompression budget, applied by one background thread every `interval_s` in one round trip:
    an upload's answer waits for none of them.

    A charge not applied (Redis down, the worker stopped first, more than `max_accounts` devices waiting) is lost:
    the budget guards against abuse, it is no bill."""

    def __init__(self, budget: DecompressionBudget, interval_s: float = 0.1, max_accounts: int = 10_000) -> None:
        super().__init__("budget-charges", interval_s)
        self.budget = budget
        self.max_accounts = max_accounts
        self._pending: dict[str, int] = {}

    def charge(self, account_id: str, decompressed_bytes: int) -> None:
        if not self.budget.enabled:
            return
        with self._lock:
            if account_id in self._pending or len(self._pending) < self.max_accounts:
                self._pending[account_id] = self._pending.get(account_id, 0) + decompressed_bytes
            self._start_unless_running()

    def flush(self) -> int:
        """Applies what is queued, one command per device; the number of devices charged (0 when Redis failed)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            try:
                pipe = self.budget.client.pipeline(transaction=False)
                for account_id, amount in pending.items():
                    self.budget.queue(pipe, account_id, amount)
                pipe.execute()
            except redis.exceptions.NoScriptError:
                for account_id, amount in pending.items():  # a Redis that restarted: the plain calls load the script
                    self.budget.apply(account_id, amount)
        except Exception as error:  # any Redis error: the thread must live on for the next charges
            logger.warning("decompression budget charges dropped", extra={"devices": len(pending), "error": str(error)})
            return 0
        return len(pending)
