"""The kafka-source bridge's poll loop against a scripted librdkafka consumer: a partition paused while its records
are delivered, its offset committed only for what is done and only while it is this member's, rebalances, commit
and poll errors."""

from __future__ import annotations

import threading
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from support.clock import SetClock
from test_kafka_bridge import FakeSession, record

from easysmart.bridges.kafka_source import KafkaSourceBridge
from easysmart.config import KafkaBridgeSettings, KafkaSettings

TOPIC = "telemetry.raw"


class Message:
    """librdkafka's message: accessors, and error() None for a record."""

    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._record = record(offset)._replace(partition=partition)
        self._error = error

    def topic(self):
        return TOPIC

    def partition(self):
        return self._record.partition

    def offset(self):
        return self._record.offset

    def key(self):
        return self._record.key

    def value(self):
        return self._record.value

    def headers(self):
        return self._record.headers

    def error(self):
        return self._error


Step = Callable[["ScriptedConsumer"], list[Message]]


class ScriptedConsumer:
    """Each poll runs the next step of the script (which may call the rebalance callbacks, as librdkafka does
    within a poll) and hands over the messages it returns; the bridge stops when the script ends. Records every
    pause, resume, seek and commit."""

    def __init__(self, subject: KafkaSourceBridge, steps: list[Step]) -> None:
        self.subject, self.steps = subject, list(steps)
        self.pending: list[Message] = []
        self.calls: list[tuple[str, int, int | None]] = []
        self.commit_errors: list[KafkaError] = []
        self.assigned: list[TopicPartition] = []
        self.closed = False

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost

    def assign(self, partitions):
        self.assigned = list(partitions)

    def poll(self, timeout):
        if not self.steps:
            self.subject.stopping.set()
            return None
        self.pending = self.steps.pop(0)(self)
        return self.pending.pop(0) if self.pending else None

    def consume(self, num_messages, timeout):
        taken, self.pending = self.pending, []
        return taken

    def pause(self, partitions):
        self.calls += [("pause", tp.partition, None) for tp in partitions]

    def resume(self, partitions):
        self.calls += [("resume", tp.partition, None) for tp in partitions]

    def seek(self, tp):
        self.calls.append(("seek", tp.partition, tp.offset))

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        if self.commit_errors:
            raise KafkaException(self.commit_errors.pop(0))
        self.calls += [("commit", tp.partition, tp.offset) for tp in offsets]

    def assignment(self):
        return []

    def close(self):
        self.closed = True
        self.on_revoke(self, self.assigned)

    def kept(self, *kinds: str) -> list[tuple]:
        return [call for call in self.calls if call[0] in kinds]


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


class Gate:
    """Holds the delivery of one partition's records until opened; the others pass."""

    def __init__(self, subject: KafkaSourceBridge, held_partition: int) -> None:
        self.opened, self.started = threading.Event(), threading.Event()
        self.subject, self.held_partition = subject, held_partition
        handle = subject.handle_partition

        def gated(records):
            if records[0].partition == held_partition:
                self.started.set()
                assert self.opened.wait(10)
            return handle(records)

        subject.handle_partition = gated  # type: ignore[method-assign]

    def open_and_wait(self) -> None:
        self.opened.set()
        self.subject._in_flight[self.held_partition].future.result(10)


def subject_with(statuses=(200,)) -> tuple[KafkaSourceBridge, ScriptedConsumer]:
    """A bridge whose consumer is scripted (the test sets `consumer.steps`), its sink answering `statuses`."""
    clock = SetClock()
    settings = KafkaBridgeSettings(backoff_base_s=0.001, backoff_max_s=0.002, retry_max_elapsed_s=5)
    subject = KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers="k:1"), settings, FakeSession(list(statuses), clock), clock.monotonic
    )
    subject.metrics.refresh = lambda consumer: None  # type: ignore[method-assign]  # no offsets to read here
    consumer = ScriptedConsumer(subject, [])

    def connect() -> ScriptedConsumer:
        consumer.subscribe([TOPIC], subject._on_assign, subject._on_revoke, subject._on_lost)
        return consumer

    subject._connect = connect  # type: ignore[method-assign]
    return subject, consumer


def assigned(*partitions: int) -> Step:
    """The group's first assignment; the calls it makes are not the test's subject."""

    def step(consumer: ScriptedConsumer) -> list[Message]:
        consumer.on_assign(consumer, [tp(p) for p in partitions])
        consumer.calls.clear()
        return []

    return step


def handing_over(*messages: Message) -> Step:
    return lambda consumer: list(messages)


def delivered_in_full(partition: int) -> Step:
    def step(consumer: ScriptedConsumer) -> list[Message]:
        entry = consumer.subject._in_flight.get(partition)  # None: finished already
        if entry is not None:
            entry.future.result(10)
        return []

    return step


def test_a_fully_delivered_partition_is_committed_past_its_last_record_and_resumed():
    subject, consumer = subject_with()
    consumer.steps = [
        assigned(0),
        handing_over(Message(0, 5), Message(0, 6), Message(0, 7)),
        delivered_in_full(0),
    ]

    subject.run()

    assert consumer.kept("pause", "commit", "resume", "seek") == [
        ("pause", 0, None),
        ("commit", 0, 8),
        ("resume", 0, None),
        ("seek", 0, 8),  # librdkafka fetches a resumed partition at once only when told where to
    ]
    assert len(subject.session.posts) == 3 and consumer.closed


def test_a_partition_revoked_while_in_flight_is_not_committed_when_its_delivery_ends():
    subject, consumer = subject_with()
    gate = Gate(subject, held_partition=1)

    def revoke_both_assign_0(consumer: ScriptedConsumer) -> list[Message]:
        assert gate.started.wait(10)
        consumer.on_revoke(consumer, [tp(0), tp(1)])
        consumer.on_assign(consumer, [tp(0)])  # another member took partition 1
        gate.open_and_wait()
        return []

    consumer.steps = [
        assigned(0, 1),
        handing_over(Message(1, 3), Message(1, 4)),
        revoke_both_assign_0,
    ]

    subject.run()

    assert consumer.kept("commit") == []
    assert ("resume", 1, None) not in consumer.calls and ("seek", 1, 5) not in consumer.calls


def test_what_is_done_when_a_partition_is_revoked_is_committed_while_it_is_still_owned():
    subject, consumer = subject_with()

    gate = Gate(subject, held_partition=0)

    def revoke_after_delivery(consumer: ScriptedConsumer) -> list[Message]:
        gate.open_and_wait()  # done, but not yet committed by the loop
        consumer.on_revoke(consumer, [tp(0)])
        return []

    consumer.steps = [assigned(0), handing_over(Message(0, 2)), revoke_after_delivery]

    subject.run()

    assert consumer.kept("commit") == [("commit", 0, 3)]


def test_nothing_is_committed_of_partitions_whose_assignment_was_lost():
    subject, consumer = subject_with()
    gate = Gate(subject, held_partition=0)

    def lost_after_delivery(consumer: ScriptedConsumer) -> list[Message]:
        gate.open_and_wait()  # done, but not yet committed by the loop
        consumer.on_lost(consumer, [tp(0)])  # the session ended while Kafka was down: another member may own it
        return []

    consumer.steps = [assigned(0), handing_over(Message(0, 2)), lost_after_delivery]

    subject.run()

    assert consumer.kept("commit") == []


def test_a_partition_given_back_while_in_flight_stays_paused_until_done_then_fetches_on_after_it():
    subject, consumer = subject_with()
    gate = Gate(subject, held_partition=0)

    def reassigned(consumer: ScriptedConsumer) -> list[Message]:
        assert gate.started.wait(10)
        consumer.on_revoke(consumer, [tp(0)])
        consumer.on_assign(consumer, [tp(0)])  # a rejoin: the same member gets it again
        consumer.calls.append(("reassigned", 0, None))
        gate.open_and_wait()
        return []

    consumer.steps = [assigned(0), handing_over(Message(0, 10), Message(0, 11)), reassigned]

    subject.run()

    after = consumer.calls[consumer.calls.index(("reassigned", 0, None)) :]
    # Paused again at the assignment; then committed, resumed and moved past its records (the new assignment's
    # position was the committed offset from before, 10).
    assert consumer.calls[consumer.calls.index(("reassigned", 0, None)) - 1] == ("pause", 0, None)
    assert [c for c in after if c[0] in ("commit", "resume", "seek")] == [
        ("commit", 0, 12),
        ("resume", 0, None),
        ("seek", 0, 12),
    ]
    assert len(subject.session.posts) == 2  # not fetched and delivered a second time meanwhile


def test_records_handed_over_for_a_partition_already_in_flight_are_fetched_again_after_it():
    subject, consumer = subject_with()
    gate = Gate(subject, held_partition=0)

    def straggler(consumer: ScriptedConsumer) -> list[Message]:
        assert gate.started.wait(10)
        return [Message(0, 2)]  # fetched before the pause took hold

    def release(consumer: ScriptedConsumer) -> list[Message]:
        gate.open_and_wait()
        return []

    consumer.steps = [assigned(0), handing_over(Message(0, 0), Message(0, 1)), straggler, release]

    subject.run()

    assert consumer.kept("commit", "resume", "seek") == [("commit", 0, 2), ("resume", 0, None), ("seek", 0, 2)]
    assert len(subject.session.posts) == 2


def test_a_commit_refused_after_a_rebalance_is_logged_and_the_bridge_goes_on(caplog):
    subject, consumer = subject_with()
    consumer.commit_errors = [KafkaError(KafkaError.ILLEGAL_GENERATION)]
    consumer.steps = [
        assigned(0),
        handing_over(Message(0, 0)),
        delivered_in_full(0),
        handing_over(Message(0, 1)),
        delivered_in_full(0),
    ]

    subject.run()

    assert "offset commit refused" in caplog.text
    assert consumer.kept("commit") == [("commit", 0, 2)]  # the next record's commit covers both


def test_a_commit_kafka_could_not_take_is_tried_again():
    subject, consumer = subject_with()
    consumer.commit_errors = [KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE), KafkaError(KafkaError._TRANSPORT)]
    consumer.steps = [assigned(0), handing_over(Message(0, 4)), delivered_in_full(0)]
    waits: list[float] = []
    subject.stopping.wait = lambda timeout=None: waits.append(timeout) or False  # type: ignore[method-assign]

    subject.run()

    assert consumer.kept("commit") == [("commit", 0, 5)]
    assert len(waits) == 2  # a backoff before each retry


def test_poll_errors_are_logged_and_polling_goes_on(caplog):
    subject, consumer = subject_with()
    consumer.steps = [
        assigned(0),
        handing_over(Message(0, -1, KafkaError(KafkaError._ALL_BROKERS_DOWN)), Message(0, 0)),
        delivered_in_full(0),
    ]

    subject.run()

    assert "poll error" in caplog.text
    assert consumer.kept("commit") == [("commit", 0, 1)]


def test_stopping_mid_partition_commits_none_of_its_records_and_sets_it_back_to_the_first():
    subject, consumer = subject_with(statuses=[200, 503])  # offset 1 is retried until the bridge stops

    def stop_while_retrying(consumer: ScriptedConsumer) -> list[Message]:
        while len(subject.session.posts) < 3:  # offset 1 answered 503 twice
            threading.Event().wait(0.01)
        subject.stopping.set()
        subject._in_flight[0].future.exception(10)
        return []

    consumer.steps = [assigned(0), handing_over(Message(0, 0), Message(0, 1)), stop_while_retrying]

    subject.run()

    # The batch was interrupted: all of it comes again from the committed offset (processing is idempotent).
    assert consumer.kept("commit") == []
    assert ("seek", 0, 0) in consumer.calls
