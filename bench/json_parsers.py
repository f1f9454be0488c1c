"""The streaming upload parser (easysmart.jsonstream) against ijson's C backend (yajl2_c), on the same upload.

Generates an upload in the real client's shape (bench/uploads.py: equipment objects, each with one long `sensor`
list of ~20-field readings with naive microsecond timestamps) of about --mib MiB of JSON, gzips it as ingest
stores it, then in a fresh interpreter per run reads the gzip in 64 KiB chunks, inflates it with process's
bounded gunzip and iterates the upload events with each parser (--normalise: and passes every reading through
process's normaliser, as process consumes them). Prints one JSON line per run (seconds, CPU seconds, peak RSS as
VmHWM) and a summary with the range of each parser's runs.

    python bench/json_parsers.py [--mib 300] [--rounds 3] [--normalise] [--parsers jsonstream,jsonstream+guards]

Parsers:
    jsonstream        easysmart.jsonstream.iter_upload_text: the events process consumes
    ijson             the same events from ijson.parse (C tokenizer; the dispatch by path and the building of
                      readings are Python, as they must be for events at two depths of one stream)
    ijson-readings    ijson.items(..., "item.sensor.item"): readings only, built in C; a lower bound for any
                      ijson reader, as it yields no equipment fields, item boundaries or non-object elements
    gunzip            inflating only: the cost every parser pays
    NAME+guards       NAME behind process's decompression guards (compression-ratio cap, whitespace-run check)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import ijson
import orjson
from uploads import client_upload

from easysmart.compression import BoundedGunzip
from easysmart.config import UploadLimits
from easysmart.jsonstream import (
    FIELD,
    ITEM_END,
    ITEM_START,
    NOT_AN_OBJECT,
    READING,
    Event,
    MalformedJsonError,
    WhitespaceRunGuard,
    iter_upload_text,
    text_reader,
)
from easysmart.payload import ReadingNormaliser, ReadingRejected

READ_CHUNK_BYTES = 64 * 1024  # easysmart.storage reads blobs in chunks of this size
BYTES_PER_READING = 562  # of bench/uploads.py's readings as JSON, for sizing the upload
PARSERS = ("jsonstream", "ijson", "ijson-readings", "gunzip")
GUARDED = "+guards"


class _ChunkFile:
    """A read()able over byte chunks, for ijson (which asks read(0) first to tell bytes from text)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)

    def read(self, size: int = -1) -> bytes:
        return b"" if size == 0 else next(self._chunks, b"")


_OPENERS = {"start_map", "start_array"}
_CLOSERS = {"end_map", "end_array"}


def _value(events: Iterator[tuple], kind: str, value: object) -> object:
    """The whole value whose first event is (kind, value); flat objects (readings) take a short path."""
    if kind == "start_map":
        built: dict = {}
        for _, kind, key in events:
            if kind == "end_map":
                return built
            _, kind, value = next(events)
            built[key] = _value(events, kind, value) if kind in _OPENERS else value
    if kind == "start_array":
        builder = ijson.ObjectBuilder()
        builder.event(kind, value)
        depth = 1
        for _, kind, value in events:
            builder.event(kind, value)
            depth += (kind in _OPENERS) - (kind in _CLOSERS)
            if depth == 0:
                return builder.value
    return value


def ijson_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """easysmart.jsonstream's events, from ijson's C tokenizer."""
    events = ijson.parse(_ChunkFile(chunks), use_float=True, buf_size=READ_CHUNK_BYTES)
    path = "$"
    try:
        _, kind, _ = next(events)
        if kind != "start_array":
            raise MalformedJsonError("expected '[' (an upload is a JSON array of equipment objects)")
        for index, (_, kind, value) in enumerate(events):
            if kind == "end_array":
                break
            path = f"$[{index}]"
            if kind != "start_map":
                yield (NOT_AN_OBJECT, index, _value(events, kind, value))
                continue
            yield (ITEM_START, index, None)
            for _, kind, key in events:
                if kind == "end_map":
                    break
                _, kind, value = next(events)
                if key == "sensor" and kind == "start_array":
                    readings = 0
                    for _, kind, value in events:
                        if kind == "end_array":
                            break
                        readings += 1
                        yield (READING, index, _value(events, kind, value))
                    if not readings:
                        yield (FIELD, index, ("sensor", []))
                else:
                    yield (FIELD, index, (key, _value(events, kind, value)))
            yield (ITEM_END, index, None)
        for _ in events:  # yajl reports data after the array
            pass
    except ijson.JSONError as error:
        raise MalformedJsonError(f"invalid JSON in {path}: {error}") from None


def _parser(name: str) -> Callable[[Iterable[bytes]], Iterator]:
    if name == "jsonstream":
        return lambda chunks: iter_upload_text(text_reader(chunks))
    if name == "ijson":
        return ijson_events
    if name == "ijson-readings":
        return lambda chunks: (
            (READING, 0, reading)
            for reading in ijson.items(
                _ChunkFile(chunks), "item.sensor.item", use_float=True, buf_size=READ_CHUNK_BYTES
            )
        )
    return lambda chunks: ((None, 0, None) for _ in chunks)


def _blob_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as blob:
        while chunk := blob.read(READ_CHUNK_BYTES):
            yield chunk


def _texts(blob: Path, guarded: bool) -> Iterator[bytes]:
    """The blob inflated as process inflates it (guarded), or bounded by size alone."""
    if not guarded:
        return BoundedGunzip(1 << 40).inflate(_blob_chunks(blob))
    limits = UploadLimits()
    inflater = BoundedGunzip(1 << 40, limits.ingest_max_decompression_ratio, limits.ingest_ratio_floor_bytes)
    return WhitespaceRunGuard(limits.ingest_max_whitespace_run_bytes).checked(inflater.inflate(_blob_chunks(blob)))


def run_one(parser: str, blob: Path, normalise: bool) -> dict:
    """One parser over the blob, in this interpreter; its figures."""
    # A day of future tolerance: the generator writes this machine's local time, read here in the tenant's zone.
    normaliser = ReadingNormaliser("America/Sao_Paulo", datetime.now(timezone.utc), 30, 86400) if normalise else None
    counts = {READING: 0, FIELD: 0, ITEM_START: 0, ITEM_END: 0, NOT_AN_OBJECT: 0, None: 0}
    rejected = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    texts = _texts(blob, parser.endswith(GUARDED))
    for kind, _, payload in _parser(parser.removesuffix(GUARDED))(texts):
        counts[kind] += 1
        if normaliser is not None and kind == READING:
            try:
                normaliser.normalise(payload)
            except ReadingRejected:
                rejected += 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    return {
        "parser": parser,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "readings": counts[READING],
        "fields": counts[FIELD],
        "items": counts[ITEM_END],
        "rejected": rejected,
    }


def make_blob(mib: int, directory: Path) -> tuple[Path, int]:
    """The gzip of a client-shaped upload of about `mib` MiB; (its path, the JSON's size)."""
    text = orjson.dumps(client_upload(mib * 2**20 // BYTES_PER_READING))
    blob = directory / "upload.json.gz"
    blob.write_bytes(gzip.compress(text, 6))
    return blob, len(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=300, help="size of the upload's JSON text")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each parser, interleaved")
    parser.add_argument("--normalise", action="store_true", help="also normalise every reading, as process does")
    parser.add_argument("--parsers", default=",".join(PARSERS))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run in this interpreter
    parser.add_argument("--blob", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, Path(args.blob), args.normalise)))
        return

    with tempfile.TemporaryDirectory(prefix="json-parsers-") as directory:
        blob, text_bytes = make_blob(args.mib, Path(directory))
        print(
            json.dumps(
                {
                    "json_bytes": text_bytes,
                    "gzip_bytes": blob.stat().st_size,
                    "ijson_backend": ijson.backend,
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                }
            )
        )
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for name in args.parsers.split(","):
                command = [sys.executable, __file__, "--run", name, "--blob", str(blob)]
                if args.normalise:
                    command.append("--normalise")
                child = subprocess.run(command, check=True, capture_output=True, text=True)
                measured = json.loads(child.stdout)
                print(json.dumps(measured))
                runs.setdefault(name, []).append(measured)
    for name, measured in runs.items():
        seconds = [m["seconds"] for m in measured]
        cpu = [m["cpu_seconds"] for m in measured]
        peaks = [m["peak_rss_mib"] for m in measured]
        print(
            f"{name:18} {min(seconds):6.2f}-{max(seconds):6.2f} s   CPU {min(cpu):6.2f}-{max(cpu):6.2f} s"
            f"   peak RSS {min(peaks):6.1f}-{max(peaks):6.1f} MiB"
        )


if __name__ == "__main__":
    main()
