import gzip
import io
import os

import orjson
import pytest
from support.samples import FIXTURES

from easysmart.compression import BoundedGunzip
from easysmart.errors import BadRequestError, PayloadTooLargeError, UnprocessableError
from easysmart.ingest import inspect_window


def inflate(data: bytes, limit: int = 10**9) -> bytes:
    decompressor = BoundedGunzip(limit)
    out = b"".join(piece for i in range(0, len(data), 1000) for piece in decompressor.feed(data[i : i + 1000]))
    decompressor.finish()
    return out


def test_counts_items_and_readings_of_a_complete_upload():
    shape = inspect_window((FIXTURES / "ha-bulk-mixed.json").read_bytes(), complete=True)
    assert (shape.items, shape.readings) == (2, 59)


def test_structure_violations_are_422_with_every_path():
    upload = orjson.dumps([{"equip_uuid": "a", "sensor": [{}]}, {"sensor": [{}]}, {"equip_uuid": "c"}, 5])
    with pytest.raises(UnprocessableError) as caught:
        inspect_window(upload, complete=True)
    assert caught.value.details["paths"] == ["[1].equip_uuid", "[2].sensor", "[3]"]


@pytest.mark.parametrize("body", [b'{"equip_uuid": "x"}', b'"text"', b"42"])
def test_json_that_is_not_an_array_is_422(body):
    with pytest.raises(UnprocessableError):
        inspect_window(body, complete=True)


@pytest.mark.parametrize("complete", [True, False])
def test_text_that_is_not_json_is_400(complete):
    with pytest.raises(BadRequestError):
        inspect_window(bytearray(1000), complete=complete)


def test_a_window_checks_the_items_it_holds():
    items = [{"equip_uuid": "e", "sensor": [{"sensor_uuid": "s"}] * 50}, {"sensor": []}] + [
        {"equip_uuid": "f", "sensor": [{}] * 1000}
    ]
    data = orjson.dumps(items)
    with pytest.raises(UnprocessableError, match=r"\[1\]"):
        inspect_window(data[:5000], complete=False)


def test_multi_member_gzip_is_read_whole():
    assert inflate(gzip.compress(b"[1,") + gzip.compress(b"2]")) == b"[1,2]"


def test_truncated_gzip_is_400():
    data = gzip.compress(os.urandom(5000))
    with pytest.raises(BadRequestError, match="truncated"):
        inflate(data[:-20])


def test_garbage_is_not_gzip():
    with pytest.raises(BadRequestError, match="not valid gzip"):
        inflate(b"this is not gzip at all")


def test_decompressed_size_is_limited_while_streaming():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    decompressor = BoundedGunzip(limit=10 * 1024 * 1024)
    seen = 0
    with pytest.raises(PayloadTooLargeError):
        for piece in decompressor.feed(bomb):
            seen += len(piece)
    assert seen <= 10 * 1024 * 1024


def test_a_resent_upload_compressed_again_hashes_the_same():
    from easysmart.ingest import _BlobWriter

    text = orjson.dumps([{"equip_uuid": "e", "sensor": [{"sensor_uuid": "s"}]}])
    digests = []
    for mtime in (1_700_000_000, 1_700_000_999):
        writer = _BlobWriter(io.BytesIO())
        body = gzip.compress(text, mtime=mtime)
        for i in range(0, len(body), 3):  # the header arrives in pieces
            writer.write_gzip(body[i : i + 3])
        digests.append(writer.hexdigest())
    assert digests[0] == digests[1]
