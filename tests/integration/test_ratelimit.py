import uuid

import pytest

from easysmart.errors import RateLimitedError
from easysmart.ratelimit import Limit, RateLimiter


def test_a_bucket_allows_its_limit_then_refuses_with_headers(redis_client):
    limiter = RateLimiter(redis_client)
    key = uuid.uuid4().hex
    limits = [Limit("device", f"device:{key}", 5), Limit("client address", f"addr:{key}", 100)]
    remaining = [int(limiter.check(limits)["RateLimit-Remaining"]) for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    with pytest.raises(RateLimitedError) as refused:
        limiter.check(limits)
    assert refused.value.retry_after_s >= 1
    assert refused.value.headers["RateLimit-Limit"] == "5"
    assert "per device" in refused.value.message


def test_a_refused_request_takes_no_token_from_the_other_buckets(redis_client):
    limiter = RateLimiter(redis_client)
    key = uuid.uuid4().hex
    address = Limit("client address", f"addr:{key}", 3)
    limiter.check([Limit("device", f"device:a{key}", 1), address])
    with pytest.raises(RateLimitedError):
        limiter.check([Limit("device", f"device:a{key}", 1), address])
    # The address bucket still holds 2 tokens: two other devices behind it pass.
    limiter.check([Limit("device", f"device:b{key}", 1), address])
    limiter.check([Limit("device", f"device:c{key}", 1), address])
    with pytest.raises(RateLimitedError, match="client address"):
        limiter.check([Limit("device", f"device:d{key}", 1), address])
