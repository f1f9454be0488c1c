"""Incremental reading of an upload (a JSON array of equipment objects) in bounded memory.

Uploads after days offline decompress to hundreds of MiB, mostly one long `sensor` list per
equipment. This reader walks the two outer levels itself and decodes every other value with a
C decoder (runs of readings with orjson, equipment fields with the standard library's), so
memory holds one buffer of text and one run of readings at a time. Process streams uploads
above its one-go threshold with it; ingest reads its synchronous window with it (complete=False).

Both this reader and `events_from_items` (for uploads parsed in one go) yield the same events:
    (ITEM_START, index, None)
    (FIELD, index, (key, value))        every equipment field but `sensor` as a list
    (READING, index, raw_reading)       each element of the item's `sensor` list
    (ITEM_END, index, None)
    (NOT_AN_OBJECT, index, value)       an array element that is not an object

Why not ijson: bench/json_parsers.py measured both on the same 300 MiB upload in the client's shape
(560k readings of 19 fields; its 10 MiB gzip read in 64 KiB chunks through process's bounded
gunzip; a fresh interpreter per run; 2 cores shared with other work; 8 runs each):
    this reader                                     1.2-1.7 s   peak RSS 33-36 MiB
    ijson 3.6, C backend yajl2_c, the same events   5.5-6.5 s   peak RSS 32 MiB
    ijson, only the readings, built in C            3.1-3.8 s   peak RSS 26 MiB
    inflating alone                                 0.2-0.3 s   peak RSS 21 MiB
and with process's normaliser on every reading, 3.6-4.7 s against 7.9-12.1 s. ijson tokenizes in
C, but events at two depths of one stream (equipment fields and readings) reach Python token by
token, about 40 per reading; this reader hands whole runs of readings to orjson. Both hold memory
bounded; the few MiB more here are the run window (up to 1 MiB of text parsed at once).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Callable, Iterable, Iterator

import orjson

from easysmart.errors import BadRequestError, EasySmartError, PayloadTooLargeError

ITEM_START, FIELD, READING, ITEM_END, NOT_AN_OBJECT = "item_start", "field", "reading", "item_end", "not_an_object"
Event = tuple[str, int, object]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SINGLE_STEPS = 32


class MalformedJsonError(BadRequestError):
    """The text is not valid JSON (or not the expected array); the message says where."""


class WindowExhausted(EasySmartError):
    """The available prefix ended before the upload did (ingest's synchronous window)."""


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class _Buffer:
    def __init__(self, read: Callable[[], str], complete: bool, max_value_chars: int) -> None:
        self._read = read
        self._complete = complete
        self.max_value_chars = max_value_chars
        self.text = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the front, for error offsets
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self._read()
        if not chunk:
            if not self._complete:
                raise WindowExhausted("the available text ended before the upload did")
            self.eof = True
            return False
        self.consumed += self.pos
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def offset(self) -> int:
        return self.consumed + self.pos

    def peek(self) -> str:
        while True:
            blank = _WHITESPACE.match(self.text, self.pos)
            if blank is not None:
                self.pos = blank.end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, allowed: str, what: str) -> str:
        char = self.peek()
        if not char or char not in allowed:
            found = repr(char) if char else "end of input"
            raise MalformedJsonError(f"expected {what} at character {self.offset()}, found {found}")
        self.pos += 1
        return char

    def value(self) -> object:
        while True:
            if not self.peek():
                raise MalformedJsonError(f"expected a value at character {self.offset()}, found end of input")
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except ValueError as error:
                # Either a real error or a value cut by the buffer's end: read on, within bounds.
                if len(self.text) - self.pos < self.max_value_chars and self.more():
                    continue
                if len(self.text) - self.pos >= self.max_value_chars:
                    raise MalformedJsonError(
                        f"value at character {self.offset()} is larger than {self.max_value_chars} characters"
                    ) from None
                raise MalformedJsonError(
                    f"invalid JSON at character {self.consumed + getattr(error, 'pos', self.pos)}: {error}"
                ) from None
            # A number ending exactly at the buffer's end may continue in the next chunk.
            if end == len(self.text) and not self.eof and self.more():
                continue
            self.pos = end
            return value

    def readings_run(self, max_chars: int = 1 << 20) -> list | None:
        """Several sensor-list elements at once: from here to the last '}' in the buffer, parsed
        by orjson as one array. It parses only when the cut falls between elements of this
        list (JSON is unambiguous, so those are exactly the next elements); None otherwise."""
        if self.peek() != "{":
            return None
        end = self.text.rfind("}", self.pos, self.pos + max_chars)
        if end < 0:
            return None
        try:
            values = orjson.loads("[" + self.text[self.pos : end + 1] + "]")
        except orjson.JSONDecodeError:
            return None
        self.pos = end + 1
        return values

    def reading(self) -> object:
        """A sensor-list element. Readings are flat objects: the first '}' that closes a valid
        JSON object ends it (JSON objects are self-delimiting), which orjson checks much faster
        than the standard decoder. Anything else takes the general path."""
        if self.peek() == "{":
            end = self.text.find("}", self.pos)
            for _ in range(4):
                if end < 0:
                    break
                try:
                    value = orjson.loads(self.text[self.pos : end + 1])
                except orjson.JSONDecodeError:
                    end = self.text.find("}", end + 1)
                    continue
                self.pos = end + 1
                return value
        return self.value()


def iter_upload_text(
    read: Callable[[], str], complete: bool = True, max_value_chars: int = 4 * 1024 * 1024
) -> Iterator[Event]:
    """Events of an upload whose text comes from read() ('' at the end).

    complete=False means read() gives only a prefix: WindowExhausted is raised where it ends.
    """
    buf = _Buffer(read, complete, max_value_chars)
    buf.expect("[", "'[' (an upload is a JSON array of equipment objects)")
    index = 0
    if buf.peek() == "]":
        buf.pos += 1
    else:
        while True:
            if buf.peek() == "{":
                yield from _item(buf, index)
            else:
                yield (NOT_AN_OBJECT, index, buf.value())
            index += 1
            if buf.expect(",]", "',' or ']' after an array element") == "]":
                break
    if buf.peek():
        raise MalformedJsonError(f"unexpected data after the array at character {buf.offset()}")


def _item(buf: _Buffer, index: int) -> Iterator[Event]:
    buf.expect("{", "'{'")
    yield (ITEM_START, index, None)
    if buf.peek() == "}":
        buf.pos += 1
        yield (ITEM_END, index, None)
        return
    while True:
        if buf.peek() != '"':
            raise MalformedJsonError(f"expected a key string at character {buf.offset()}")
        key = buf.value()
        buf.expect(":", "':' after a key")
        if key == "sensor" and buf.peek() == "[":
            buf.pos += 1
            if buf.peek() == "]":
                buf.pos += 1
                yield (FIELD, index, ("sensor", []))
            else:
                single_steps = 0
                while True:
                    run = buf.readings_run() if single_steps == 0 else None
                    if run:
                        for value in run:
                            yield (READING, index, value)
                    else:
                        # A cut that fell mid-element or past the list: go one by one for a while.
                        yield (READING, index, buf.reading())
                        single_steps = (single_steps + 1) % _SINGLE_STEPS
                    if buf.expect(",]", "',' or ']' in the sensor list") == "]":
                        break
        else:
            yield (FIELD, index, (key, buf.value()))
        if buf.expect(",}", "',' or '}' in an equipment object") == "}":
            break
    yield (ITEM_END, index, None)


def events_from_items(items: object) -> Iterator[Event]:
    """The same events for an upload already parsed in one go."""
    if not isinstance(items, list):
        raise MalformedJsonError("an upload is a JSON array of equipment objects")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            yield (NOT_AN_OBJECT, index, item)
            continue
        yield (ITEM_START, index, None)
        for key, value in item.items():
            if key == "sensor" and isinstance(value, list) and value:
                for reading in value:
                    yield (READING, index, reading)
            else:
                yield (FIELD, index, (key, value))
        yield (ITEM_END, index, None)


class WhitespaceRunError(PayloadTooLargeError):
    """A run of whitespace longer than any real upload holds: the cheapest decompression bomb
    (a few bytes of gzip per MiB) that parses as JSON."""


# Each of JSON's four whitespace bytes becomes a space, so one substring search finds runs of any mix.
_AS_SPACES = bytes.maketrans(b"\t\n\r", b"   ")


class WhitespaceRunGuard:
    """Refuses decompressed upload text holding a run of more than `limit` whitespace bytes.

    Real uploads have none longer than an indentation; a run is refused wherever it lies, also
    inside a string, where only spaces can appear and no stored field keeps more than 256 characters.
    Byte-level: a skipping substring search per chunk, after a translate when the chunk has line breaks.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.offset = 0  # bytes checked so far
        self._needle = b" " * (limit + 1)
        self._run = 0  # whitespace bytes at the end of what was checked

    def check(self, chunk: bytes) -> None:
        # Compact JSON (what the client sends) has no tab or line break: nothing to translate.
        spaced = chunk.translate(_AS_SPACES) if b"\n" in chunk or b"\r" in chunk or b"\t" in chunk else chunk
        head = spaced[: self.limit + 1]
        leading = len(head) - len(head.lstrip(b" "))
        if self._run + leading > self.limit:
            self._refuse(self.offset - self._run)
        if leading == len(spaced):
            self._run += leading
        else:
            found = spaced.find(self._needle)
            if found >= 0:
                self._refuse(self.offset + found)
            tail = spaced[-self.limit :]
            self._run = len(tail) - len(tail.rstrip(b" "))
        self.offset += len(chunk)

    def checked(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.check(chunk)
            yield chunk

    def _refuse(self, start: int) -> None:
        raise WhitespaceRunError(
            f"a run of more than {self.limit} whitespace bytes at byte {start} of the decompressed upload;"
            " real uploads have none",
            limit=self.limit,
            offset=start,
        )


def text_reader(chunks: Iterable[bytes]) -> Callable[[], str]:
    """read() over decoded UTF-8 text of byte chunks; invalid UTF-8 is malformed JSON."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    iterator = iter(chunks)

    def read() -> str:
        for chunk in iterator:
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise MalformedJsonError(f"the upload is not valid UTF-8: {error.reason}") from None
            if text:
                return text
        try:
            return decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise MalformedJsonError(f"the upload is not valid UTF-8: {error.reason}") from None

    return read
