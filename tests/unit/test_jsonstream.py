import json

import orjson
import pytest
from support.samples import FIXTURES

from easysmart.errors import BadRequestError
from easysmart.jsonstream import MalformedJsonError, WindowExhausted, events_from_items, iter_upload_text, text_reader


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("name", ["ha-bulk-small.json", "ha-bulk-mixed.json", "ha-bulk-legacy.json"])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_streamed_events_equal_events_of_the_parsed_upload(name, chunk_size):
    data = (FIXTURES / name).read_bytes()
    streamed = list(iter_upload_text(text_reader(chunked(data, chunk_size))))
    assert streamed == list(events_from_items(orjson.loads(data)))


def test_multibyte_characters_split_across_chunks_survive():
    data = json.dumps(
        [{"equip_uuid": "e", "equip_nome": "Câmara Fria São João", "sensor": [{"a": "°C"}]}], ensure_ascii=False
    ).encode()
    events = list(iter_upload_text(text_reader(chunked(data, 1))))
    assert ("field", 0, ("equip_nome", "Câmara Fria São João")) in events


def test_numbers_cut_by_a_chunk_boundary_are_read_whole():
    data = b'[{"equip_uuid": "e", "sensor": [{"v": 123456789}], "n": 987654321}]'
    for size in range(1, len(data)):
        events = list(iter_upload_text(text_reader(chunked(data, size))))
        assert ("reading", 0, {"v": 123456789}) in events
        assert ("field", 0, ("n", 987654321)) in events


@pytest.mark.parametrize(
    "text, where",
    [
        (b'{"a": 1}', "expected '['"),
        (b'[{"a": 1}', "end of input"),
        (b'[{"a": 1}] trailing', "after the array"),
        (b'[{"a": NaN}]', "NaN"),
        (b'[{"a": }]', "invalid JSON"),
        (b'[{"sensor": [1, 2,]}]', "invalid JSON"),
        (b'[{"a": "\xff"}]', "UTF-8"),
    ],
)
def test_malformed_uploads_say_what_and_where(text, where):
    with pytest.raises(MalformedJsonError) as caught:
        list(iter_upload_text(text_reader([text])))
    assert where in str(caught.value)
    assert isinstance(caught.value, BadRequestError) and where in caught.value.message


def test_a_prefix_yields_what_it_holds_then_reports_the_window_ran_out():
    data = (FIXTURES / "ha-bulk-small.json").read_bytes()
    seen = []
    with pytest.raises(WindowExhausted):
        for event in iter_upload_text(text_reader([data[: len(data) // 2]]), complete=False):
            seen.append(event)
    assert 5 < sum(1 for kind, _, _ in seen if kind == "reading") < 40


def test_a_value_larger_than_the_bound_is_refused():
    data = b'[{"equip_uuid": "' + b"x" * 5000 + b'"}]'
    with pytest.raises(MalformedJsonError, match="larger than"):
        list(iter_upload_text(text_reader(chunked(data, 100)), max_value_chars=1000))


def test_non_object_elements_are_reported_as_such():
    events = list(iter_upload_text(text_reader([b'[1, "x", {"equip_uuid": "e"}]'])))
    assert events[:2] == [("not_an_object", 0, 1), ("not_an_object", 1, "x")]
