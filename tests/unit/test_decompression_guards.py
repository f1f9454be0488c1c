"""The guards that bound what decompressing an upload costs: whitespace runs and the compression ratio."""

import gzip
import json

import orjson
import pytest
from support.samples import FIXTURES, client_backlog

from easysmart.compression import BoundedGunzip, CompressionRatioError
from easysmart.config import UploadLimits
from easysmart.jsonstream import WhitespaceRunError, WhitespaceRunGuard

MiB = 1024 * 1024


def check_all(guard: WhitespaceRunGuard, chunks: list[bytes]) -> None:
    for chunk in chunks:
        guard.check(chunk)


def test_a_run_of_the_limit_passes_and_one_byte_more_is_refused_at_its_offset():
    check_all(WhitespaceRunGuard(16), [b"[" + b" " * 16 + b"1]"])
    with pytest.raises(WhitespaceRunError) as refused:
        check_all(WhitespaceRunGuard(16), [b'[{"a": 1},' + b" \t\r\n" * 4 + b" 2]"])
    assert refused.value.status == 413
    assert refused.value.details["offset"] == 10
    assert "at byte 10 of the decompressed upload" in refused.value.message


@pytest.mark.parametrize("size", [1, 3, 16, 17, 1000])
def test_a_run_split_across_chunks_is_found_where_it_starts(size):
    text = b'[{"a": 1}, ' + b"\n " * 20 + b"2]"
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    with pytest.raises(WhitespaceRunError) as refused:
        check_all(WhitespaceRunGuard(32), chunks)
    assert refused.value.details["offset"] == 10


def test_short_runs_in_every_chunk_never_add_up():
    guard = WhitespaceRunGuard(8)
    check_all(guard, [b"1      ,", b"      2", b",      "] * 1000)
    assert guard.offset == 22 * 1000


@pytest.mark.parametrize("name", ["ha-bulk-small.json", "ha-bulk-mixed.json", "ha-bulk-legacy.json"])
@pytest.mark.parametrize("indent", [None, 1, 4])
def test_the_client_s_uploads_pass_compact_or_indented(name, indent):
    items = json.loads((FIXTURES / name).read_text())
    check_all(
        WhitespaceRunGuard(UploadLimits().ingest_max_whitespace_run_bytes), [json.dumps(items, indent=indent).encode()]
    )


def inflate_all(body: bytes, limits: UploadLimits = UploadLimits()) -> int:
    inflater = BoundedGunzip(
        limits.ingest_max_decompressed_bytes, limits.ingest_max_decompression_ratio, limits.ingest_ratio_floor_bytes
    )
    return sum(len(piece) for piece in inflater.inflate(body[i : i + 65536] for i in range(0, len(body), 65536)))


def test_a_short_value_repeated_past_the_ratio_is_refused_while_inflating():
    bomb = gzip.compress(b'[{"equip_uuid": "e", "sensor": [' + b"{}," * (20 * MiB) + b"{}]}]", 9)
    with pytest.raises(CompressionRatioError, match="more than 500:1") as refused:
        inflate_all(bomb)
    assert refused.value.status == 413
    assert refused.value.details["max_ratio"] == 500


def test_identical_client_readings_stay_below_the_ratio():
    # Deflate spends a distance code on every 258 bytes repeated from a reading ~600 bytes back: ~200:1 at
    # most, so such an upload is left to the decompressed-size limit and the device's hourly budget.
    reading = json.loads((FIXTURES / "ha-bulk-small.json").read_text())[0]["sensor"][0]
    text = orjson.dumps([{"equip_uuid": "e", "sensor": [reading] * 20_000}])
    assert inflate_all(gzip.compress(text, 9)) == len(text)


def test_a_huge_string_of_one_character_is_refused_by_the_ratio():
    bomb = gzip.compress(b'[{"equip_uuid": "' + b"e" * (64 * MiB) + b'", "sensor": []}]', 9)
    with pytest.raises(CompressionRatioError):
        inflate_all(bomb)


def test_a_tiny_upload_may_compress_better_than_the_ratio_below_the_floor():
    text = b"[" + b"0," * (MiB // 2 - 2) + b"0]"  # just under 1 MiB, compressing ~1000:1
    assert inflate_all(gzip.compress(text, 9)) == len(text)


def test_a_client_shaped_backlog_passes_the_ratio():
    text = orjson.dumps(client_backlog(polls=5000))  # 20,000 readings, ~11 MiB
    assert inflate_all(gzip.compress(text, 9)) == len(text)
