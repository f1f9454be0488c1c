"""Bounded gzip decompression for streams: no input can make it hold or emit more than a limit."""

from __future__ import annotations

import zlib
from typing import Iterable, Iterator

from easysmart.errors import BadRequestError, PayloadTooLargeError

STEP_BYTES = 1024 * 1024


class CorruptGzipError(BadRequestError):
    code = "invalid_gzip"


class BoundedGunzip:
    """gzip (one or several members) to bytes, refusing more than `limit` decompressed bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._inflater = zlib.decompressobj(wbits=31)
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                self._fed = True
                out = self._inflater.decompress(data, STEP_BYTES)
                if out:
                    self.total += len(out)
                    if self.total > self.limit:
                        raise PayloadTooLargeError(
                            f"the upload decompresses to more than {self.limit} bytes", limit=self.limit
                        )
                    yield out
                data = self._inflater.unconsumed_tail
                if self._inflater.eof:
                    data = self._inflater.unused_data
                    if data:
                        self._inflater = zlib.decompressobj(wbits=31)
        except zlib.error as error:
            raise CorruptGzipError(f"the body is not valid gzip: {error}") from None

    def finish(self) -> None:
        if not self._fed:
            raise CorruptGzipError("the body is empty")
        if not self._inflater.eof:
            raise CorruptGzipError("the gzip stream is truncated")


def gunzip_chunks(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    inflater = BoundedGunzip(limit)
    for chunk in chunks:
        yield from inflater.feed(chunk)
    inflater.finish()
