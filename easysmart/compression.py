"""Bounded gzip decompression for streams: no input can make it hold or emit more than a limit,
nor more than a ratio of decompressed to compressed bytes."""

from __future__ import annotations

import zlib
from typing import Iterable, Iterator

from easysmart.errors import BadRequestError, PayloadTooLargeError

STEP_BYTES = 1024 * 1024


class CorruptGzipError(BadRequestError):
    code = "invalid_gzip"


class CompressionRatioError(PayloadTooLargeError):
    """The upload decompresses far more than any real upload does (a decompression bomb)."""


class BoundedGunzip:
    """gzip (one or several members) to bytes, refusing more than `limit` decompressed bytes and,
    once more than `ratio_floor` bytes are out, more than `max_ratio` bytes out per byte in (tiny
    uploads can compress better than any real backlog without costing anything)."""

    def __init__(self, limit: int, max_ratio: float | None = None, ratio_floor: int = STEP_BYTES) -> None:
        self.limit = limit
        self.max_ratio = max_ratio
        self.ratio_floor = ratio_floor
        self.total = 0
        self.consumed = 0  # compressed bytes the decompressor has used
        self._inflater = zlib.decompressobj(wbits=31)
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                # The ratio is checked before inflating more, so the consumer has seen every piece out
                # (and its own, more precise guards may refuse it first).
                self._check_ratio()
                self._fed = True
                out = self._inflater.decompress(data, STEP_BYTES)
                rest = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
                self.consumed += len(data) - len(rest)
                if out:
                    self.total += len(out)
                    if self.total > self.limit:
                        raise PayloadTooLargeError(
                            f"the upload decompresses to more than {self.limit} bytes", limit=self.limit
                        )
                    yield out
                data = rest
                if self._inflater.eof and data:
                    self._inflater = zlib.decompressobj(wbits=31)
        except zlib.error as error:
            raise CorruptGzipError(f"the body is not valid gzip: {error}") from None

    def _check_ratio(self) -> None:
        if self.max_ratio is not None and self.total > self.ratio_floor and self.total > self.max_ratio * self.consumed:
            raise CompressionRatioError(
                f"the upload decompresses more than {self.max_ratio:g}:1 ({self.total} bytes from the first"
                f" {self.consumed} bytes sent); real uploads compress far less",
                max_ratio=self.max_ratio,
            )

    def finish(self) -> None:
        if not self._fed:
            raise CorruptGzipError("the body is empty")
        if not self._inflater.eof:
            raise CorruptGzipError("the gzip stream is truncated")
        self._check_ratio()

    def inflate(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The decompressed pieces of the whole stream `chunks`."""
        for chunk in chunks:
            yield from self.feed(chunk)
        self.finish()


def gunzip_chunks(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    return BoundedGunzip(limit).inflate(chunks)
