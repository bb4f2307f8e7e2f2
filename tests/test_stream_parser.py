"""JsonArrayStream: incremental parsing of a streamed JSON array under any chunking."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiplanner.errors import ConfigError, ParseError, ResponseTooLarge
from aiplanner.stream_parser import MAX_DEPTH, JsonArrayStream


def feed_all(chunks: Sequence[str | bytes], **bounds: int) -> list[object]:
    parser = JsonArrayStream(**bounds)
    out: list[object] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    parser.close()
    assert parser.done
    assert parser.count == len(out)
    return out


def bytewise(text: str) -> list[str | bytes]:
    data = text.encode()
    return [data[i : i + 1] for i in range(len(data))]


# -- property: any array, any chunking, same result as orjson on the whole -----------------------

tricky_text = st.lists(
    st.sampled_from([*'{}[],:"\\ \n\tabé€😀', "},", "],", '\\"', "\\\\"]), max_size=10
).map("".join) | st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text
)
json_values = st.recursive(
    leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4)
    ),
    max_leaves=12,
)
plan_like = st.fixed_dictionaries(
    {
        "id": st.integers(0, 10**6),
        "s": st.lists(
            st.tuples(st.sampled_from("MACRHTSW"), st.integers(0, 999)).map(list), max_size=4
        ),
    },
    optional={"note": tricky_text, "c": st.integers(0, 3), "extra": json_values},
)
elements = plan_like | json_values
PREFIXES = [
    "",
    "Sure!\n",
    "```json\n",
    "Here is the plan:\n```\n",
    " \n\t",
    # Candidate arrays whose first element is not JSON: the parser must recover from each.
    "Sure! [not json] ok\n",
    "[tru] or [{bad}] or [note: x] ",
    '[{"a" 1}]\n[{"x":1]} ',
]
SUFFIXES = ["", "\n```", " Hope that helps! [x] {y", "]]]"]


def serialise(value: list[object], style: int) -> str:
    if style == 0:
        return orjson.dumps(value).decode()
    if style == 1:
        return json.dumps(value, indent=2, ensure_ascii=False)
    if style == 2:
        return json.dumps(value, ensure_ascii=True)  # \uXXXX escapes, surrogate pairs included
    return json.dumps(value, separators=(" , ", " :\n "), ensure_ascii=False)


@given(
    st.lists(elements, max_size=6),
    st.integers(0, 3),
    st.sampled_from(PREFIXES),
    st.sampled_from(SUFFIXES),
    st.data(),
)
def test_any_array_under_any_chunking(
    value: list[object], style: int, prefix: str, suffix: str, data: st.DataObject
) -> None:
    body = serialise(value, style)
    expected = orjson.loads(body)
    text = prefix + body + suffix
    raw = text.encode()
    how = data.draw(st.sampled_from(["bytes", "single-bytes", "str"]))
    chunks: list[str | bytes]
    if how == "single-bytes":
        chunks = [raw[i : i + 1] for i in range(len(raw))]
    else:
        size = len(raw) if how == "bytes" else len(text)
        cuts = sorted(set(data.draw(st.lists(st.integers(0, size), max_size=12))))
        bounds = [0, *cuts, size]
        source: str | bytes = raw if how == "bytes" else text
        chunks = [source[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_all(chunks) == expected


# -- explicit cases ------------------------------------------------------------------------------

PACKED = '[{"id":12,"s":[["M",3,4],["A",91]]},{"id":15,"c":2}]'


@pytest.mark.parametrize("chunks", [[PACKED], bytewise(PACKED), list(PACKED)])
def test_packed_answer(chunks: Sequence[str | bytes]) -> None:
    assert feed_all(chunks) == [{"id": 12, "s": [["M", 3, 4], ["A", 91]]}, {"id": 15, "c": 2}]


def test_each_element_is_returned_when_its_bracket_closes() -> None:
    parser = JsonArrayStream()
    assert parser.feed('[{"id":12,"c":0') == []
    assert parser.feed("}") == [{"id": 12, "c": 0}]  # before the comma or the closing ']'
    assert parser.feed(',{"id":15,"c":1}') == [{"id": 15, "c": 1}]
    assert not parser.done
    assert parser.feed("]") == []
    assert parser.done


def test_strings_with_brackets_and_escapes() -> None:
    value = [{"a": "}],{[", "b": 'say "hi" \\ ok', "c": "\\", "d": ["]", "}"]}, "},", '\\\\"']
    text = json.dumps(value)
    assert feed_all([text]) == value
    assert feed_all(bytewise(text)) == value


def test_escape_split_across_chunks() -> None:
    assert feed_all(['["a\\', '"]', '"]']) == ['a"]']
    assert feed_all(['["\\', "\\", '"]']) == ["\\"]
    assert feed_all(['["\\u00', "e9", '"]']) == ["é"]


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_utf8_split_at_every_byte(char: str) -> None:
    text = f'[{{"n":"{char}{char}"}}, "{char}"]'
    assert feed_all(bytewise(text)) == [{"n": char * 2}, char]


def test_whitespace_anywhere() -> None:
    text = ' \n[ \n { "id" :\t12 ,\r\n "c" : 1 } \n ,\n\t[ 1 , 2 ] , "x" \n ] '
    assert feed_all(bytewise(text)) == [{"id": 12, "c": 1}, [1, 2], "x"]


def test_scalars_as_elements_including_split_numbers() -> None:
    assert feed_all(['[1, -2.5e3,"x",true,null,fal', "se,12", "34]"]) == [
        1,
        -2500.0,
        "x",
        True,
        None,
        False,
        1234,
    ]
    assert feed_all(["[1\n,2\t,true\r\n,null ]"]) == [1, 2, True, None]
    parser = JsonArrayStream()
    assert parser.feed("[12") == []  # a number is complete only at its delimiter
    assert parser.feed(" ") == [12]


def test_prose_code_fence_and_trailing_text() -> None:
    text = 'Sure! Here you go:\n```json\n[{"id":1,"c":0}]\n```\nAnything [after] {is} ignored'
    parser = JsonArrayStream()
    assert parser.feed(text) == [{"id": 1, "c": 0}]
    assert parser.done
    assert parser.feed('[{"id":2,"c":0}]') == []  # after done, input is ignored
    parser.close()


def test_a_bracket_in_prose_that_no_element_follows_is_skipped() -> None:
    assert feed_all(["Answer [JSON", "]: ", "[1]"]) == [1]
    assert feed_all(["see [ below: [2]"]) == [2]


# -- recovery from prose that looks like an array -------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        ['Sure! [not json] ok [{"id":1,"c":0}]'],
        bytewise('Sure! [not json] ok [{"id":1,"c":0}]'),
        ["Sure! [not", " json] ok ", '[{"id":1,', '"c":0}]'],
    ],
)
def test_prose_before_the_array_that_looks_like_one_is_skipped(
    chunks: Sequence[str | bytes],
) -> None:
    assert feed_all(chunks) == [{"id": 1, "c": 0}]


@pytest.mark.parametrize(
    "prose",
    [
        "[tru] ",  # a literal that is not one
        '[{"a" 1}] ',  # an object that closes but is not JSON
        '[{"x":1]} ',  # mismatched brackets
        '[1"x"] ',  # junk right after a number
        '["a\nb"] ',  # a raw control character in a string
        "[note: see below] [ also prose ] ",
    ],
)
def test_each_kind_of_bad_first_element_gives_way_to_the_next_bracket(prose: str) -> None:
    text = prose + "[[1, 2], 3]"
    assert feed_all([text]) == [[1, 2], 3]
    assert feed_all(bytewise(text)) == [[1, 2], 3]


def test_without_a_later_array_the_error_names_the_failed_candidate() -> None:
    parser = JsonArrayStream()
    assert parser.feed("Sure! [not json] ok") == []
    with pytest.raises(ParseError, match=r"no JSON array .*candidate failed.*not valid JSON"):
        parser.close()


def test_once_an_element_is_returned_the_array_is_committed() -> None:
    parser = JsonArrayStream()
    assert parser.feed("[1, ") == [1]
    with pytest.raises(ParseError, match="element 1 is not valid JSON"):
        parser.feed('nope] [{"id":1,"c":0}]')


def test_a_bound_is_never_recovered_from() -> None:
    deep = "[" + "[" * (MAX_DEPTH + 1)
    with pytest.raises(ParseError, match="deeper"):
        JsonArrayStream().feed(deep + '] [{"id":1}]')
    with pytest.raises(ParseError, match="exceeds 16 bytes"):
        JsonArrayStream(max_element_bytes=16).feed('["' + "y" * 40 + '"] [1]')


def test_recovery_reads_each_byte_once_within_the_total_bound() -> None:
    # 5,000 failed candidates before the real array: all found, each byte read once (the element
    # buffer only ever holds one candidate), and the answer's total bound still counts them.
    prose = "[nope] " * 5000
    text = prose + '[{"id":1,"c":0}]'
    assert feed_all([text], max_element_bytes=16, max_buffer_bytes=len(text)) == [{"id": 1, "c": 0}]
    with pytest.raises(ResponseTooLarge):
        JsonArrayStream(max_buffer_bytes=len(prose)).feed(text)


def test_an_object_after_a_failed_candidate_is_still_an_object() -> None:
    with pytest.raises(ParseError, match="found an object"):
        JsonArrayStream().feed('Sure! [not json] {"id":1,"c":0}')


def test_empty_array() -> None:
    assert feed_all(["[ ]"]) == []


def test_only_the_current_element_is_buffered() -> None:
    # 2,000 elements of ~40 bytes through a 64-byte element bound: nothing accumulates.
    value = [{"id": i, "s": [["M", i % 30, 7]]} for i in range(2000)]
    text = orjson.dumps(value).decode()
    chunks = [text[i : i + 97] for i in range(0, len(text), 97)]
    assert feed_all(chunks, max_element_bytes=64, max_buffer_bytes=len(text)) == value


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1 2]", "expected ',' or ']'"),
        ('[{"a":1} {"b":2}]', "expected ',' or ']'"),
        ("[1,]", "trailing comma"),
        ("[1,,2]", "should start"),
        ('[{"a":1]', "mismatched"),
        ('[["a"}]', "mismatched"),
        ('[{"a":}]', "not valid JSON"),
        ('[{"a" 1}]', "not valid JSON"),
        ("[tru]", "not valid JSON"),
        ("[1}", "unexpected '}'"),
        ('[1"x"]', "unexpected '\"'"),
        ('{"id":1,"c":0}', "found an object"),
        ('["a\nb"]', "not valid JSON"),  # raw control character in a string
    ],
)
def test_malformed_input_raises_at_the_point_detected(text: str, message: str) -> None:
    parser = JsonArrayStream()
    with pytest.raises(ParseError, match=message) as info:
        for chunk in bytewise(text):
            parser.feed(chunk)
        parser.close()
    assert "at byte" in str(info.value)


def test_returned_elements_stay_valid_and_the_stream_stays_failed() -> None:
    parser = JsonArrayStream()
    first = parser.feed('[{"id":1,"c":0},')
    with pytest.raises(ParseError):
        parser.feed('{"id":2,"c":}]')
    assert first == [{"id": 1, "c": 0}]
    with pytest.raises(ParseError, match="already failed"):
        parser.feed("]")
    with pytest.raises(ParseError):
        parser.close()


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([""], "no JSON array"),
        (["I cannot plan that."], "no JSON array"),
        (['[{"id":1,"c":0}'], "never closed"),
        (['[{"id":1,"c":0},'], "never closed"),
        (["[12"], "never closed"),
        (['[{"id":1,"s":[["M",'], "unterminated element"),
        (['[{"id":1,"note":"abc'], "unterminated string"),
    ],
)
def test_close_before_the_array_ends(chunks: list[str], message: str) -> None:
    parser = JsonArrayStream()
    for chunk in chunks:
        parser.feed(chunk)
    with pytest.raises(ParseError, match=message):
        parser.close()


def test_invalid_utf8_in_an_element() -> None:
    parser = JsonArrayStream()
    with pytest.raises(ParseError, match="not valid JSON"):
        parser.feed(b'[1, "\xff\xfe"]')
    # As a first element it only disqualifies its '[': the error comes when no array follows.
    parser = JsonArrayStream()
    assert parser.feed(b'["\xff\xfe"]') == []
    with pytest.raises(ParseError, match="not valid JSON"):
        parser.close()


def test_lone_surrogate_in_a_text_chunk() -> None:
    with pytest.raises(ParseError, match="UTF-8"):
        JsonArrayStream().feed('["\ud800"]')


def test_nesting_is_bounded() -> None:
    ok = "[" + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "]"
    assert feed_all([ok])
    too_deep = "[" + "[" * (MAX_DEPTH + 1)
    with pytest.raises(ParseError, match="deeper"):
        JsonArrayStream().feed(too_deep)


# -- bounds --------------------------------------------------------------------------------------


def test_element_bound() -> None:
    parser = JsonArrayStream(max_element_bytes=32)
    assert parser.feed('[{"id":1,"c":0},') == [{"id": 1, "c": 0}]
    with pytest.raises(ParseError, match="exceeds 32 bytes"):
        parser.feed('{"id":2,"note":"' + "x" * 40)


def test_element_bound_under_single_byte_chunks() -> None:
    parser = JsonArrayStream(max_element_bytes=16)
    with pytest.raises(ParseError, match="exceeds"):
        for chunk in bytewise('["' + "y" * 100 + '"]'):
            parser.feed(chunk)


def test_total_bound_stops_a_runaway_stream() -> None:
    parser = JsonArrayStream(max_buffer_bytes=100)
    got = parser.feed('[{"id":1,"c":0},')
    with pytest.raises(ResponseTooLarge):
        for _ in range(100):
            parser.feed("1,")
    assert got == [{"id": 1, "c": 0}]


def test_total_bound_counts_prose_too() -> None:
    parser = JsonArrayStream(max_buffer_bytes=64)
    with pytest.raises(ResponseTooLarge):
        parser.feed("blah " * 20)


def test_array_ending_exactly_at_the_bound_is_fine_and_trailing_text_is_free() -> None:
    text = '[{"id":1,"c":0}]'
    parser = JsonArrayStream(max_buffer_bytes=len(text))
    assert parser.feed(text + " and a long goodbye" * 10) == [{"id": 1, "c": 0}]
    parser.close()


def test_usage_errors() -> None:
    with pytest.raises(ConfigError):
        JsonArrayStream(max_element_bytes=0)
    parser = JsonArrayStream()
    parser.feed("[]")
    parser.close()
    parser.close()  # idempotent
    with pytest.raises(ConfigError):
        parser.feed("[]")
