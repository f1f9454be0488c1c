"""The live stream's pure parts: the message format and the heartbeat's bound (no Redis is contacted)."""

from __future__ import annotations

import pytest
import redis

from easysmart.config import ConfigError, StreamSettings
from easysmart.stream import StreamService, sse_message


def test_a_message_is_one_id_event_and_data_line_ended_by_a_blank_line():
    message = sse_message("1796169837954-0", "fired", b'{"id":"e1","data":{"alert":{"name":"a\\nb"}}}')

    assert message == b'id: 1796169837954-0\nevent: fired\ndata: {"id":"e1","data":{"alert":{"name":"a\\nb"}}}\n\n'


@pytest.mark.parametrize("heartbeat_s", [0.0, 30.5, 60.0])
def test_a_heartbeat_longer_than_30_seconds_or_none_stops_the_function(heartbeat_s):
    client = redis.Redis(host="127.0.0.1", port=1)

    with pytest.raises(ConfigError, match="STREAM_HEARTBEAT_S"):
        StreamService(client, client, StreamSettings(stream_heartbeat_s=heartbeat_s))
