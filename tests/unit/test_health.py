"""The detailed health answer is cached, so polling it does not multiply round trips to the backends."""

from easysmart.errors import UnavailableError
from easysmart.health import HealthChecks


class CountingProbe:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def ping(self) -> float:
        self.calls += 1
        if self.down:
            raise UnavailableError("down")
        return 0.001


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def checks(clock: Clock) -> tuple[HealthChecks, CountingProbe]:
    probe = CountingProbe()
    return HealthChecks({"object_store": probe.ping, "kafka": probe.ping}, cache_s=5.0, monotonic=clock), probe


def test_answers_within_the_cache_time_reuse_the_last_checks():
    clock = Clock()
    health, probe = checks(clock)
    assert health.run()["status"] == "ok" and probe.calls == 2
    clock.now += 4.9
    probe.down = True
    assert health.run()["status"] == "ok" and probe.calls == 2


def test_after_the_cache_time_the_backends_are_checked_again():
    clock = Clock()
    health, probe = checks(clock)
    health.run()
    clock.now += 5.0
    probe.down = True
    answer = health.run()
    assert probe.calls == 4 and answer["status"] == "degraded" and answer["checks"]["kafka"]["status"] == "down"
