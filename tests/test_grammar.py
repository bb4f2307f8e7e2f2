"""aiplanner.grammar: JSON Schema to whitespace-free GBNF, checked three ways.

* a small GBNF matcher written here (the subset the converter emits) says exactly which texts a
  grammar accepts: the compact JSON of valid values, and nothing with whitespace or out of range;
* llama.cpp itself parses every generated grammar (``model``: needs the GGUF's vocabulary);
* unsupported schemas raise ConfigError naming the keyword.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.errors import ConfigError
from aiplanner.grammar import (
    GrammarCache,
    forced_prefix,
    grammar_alphabet,
    schema_key,
    schema_to_gbnf,
    verify_gbnf,
)
from aiplanner.schema import (
    choice_schema,
    compact_plan_schema,
    packed_schema,
    verbose_plan_schema,
    with_first_step,
)

# --- a matcher for the GBNF subset the converter writes ---------------------------------------

Node = tuple[Any, ...]
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "/": "/"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def _char(self) -> str:
        c = self.s[self.i]
        if c != "\\":
            self.i += 1
            return c
        kind = self.s[self.i + 1]
        if kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            code = int(self.s[self.i + 2 : self.i + 2 + width], 16)
            self.i += 2 + width
            return chr(code)
        self.i += 2
        return _ESCAPES[kind]

    def alternatives(self) -> Node:
        options = [self.sequence()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            options.append(self.sequence())
        return ("alt", options)

    def sequence(self) -> Node:
        items: list[Node] = []
        self._ws()
        while self.i < len(self.s) and self.s[self.i] not in "|)":
            items.append(self.postfix())
            self._ws()
        return ("seq", items)

    def postfix(self) -> Node:
        node = self.atom()
        while self.i < len(self.s) and self.s[self.i] in "*+?{":
            c = self.s[self.i]
            if c == "{":
                end = self.s.index("}", self.i)
                lo_text, _, hi_text = self.s[self.i + 1 : end].partition(",")
                lo = int(lo_text)
                if "," not in self.s[self.i : end]:
                    hi: int | None = lo
                else:
                    hi = int(hi_text) if hi_text else None
                self.i = end + 1
            else:
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                self.i += 1
            node = ("rep", node, lo, hi)
        return node

    def atom(self) -> Node:
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            out = ""
            while self.s[self.i] != '"':
                out += self._char()
            self.i += 1
            return ("lit", out)
        if c == "[":
            self.i += 1
            negated = self.s[self.i] == "^"
            self.i += negated
            ranges: list[tuple[str, str]] = []
            while self.s[self.i] != "]":
                low = self._char()
                high = low
                if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                    self.i += 1
                    high = self._char()
                ranges.append((low, high))
            self.i += 1
            return ("cls", negated, ranges)
        if c == "(":
            self.i += 1
            node = self.alternatives()
            assert self.s[self.i] == ")", self.s[self.i :]
            self.i += 1
            return node
        start = self.i
        while self.i < len(self.s) and (self.s[self.i].isalnum() or self.s[self.i] == "-"):
            self.i += 1
        assert self.i > start, f"unexpected {self.s[self.i :]!r}"
        return ("ref", self.s[start : self.i])


class Grammar:
    """Which strings a GBNF grammar (the converter's subset) accepts, by brute force."""

    def __init__(self, gbnf: str) -> None:
        self.rules: dict[str, Node] = {}
        for line in gbnf.splitlines():
            if line.strip():
                name, _, body = line.partition(" ::= ")
                parser = _Parser(body)
                self.rules[name] = parser.alternatives()
                assert parser.i == len(body), f"unparsed rest in {line!r}"

    def accepts(self, text: str) -> bool:
        memo: dict[tuple[int, int], frozenset[int]] = {}

        def ends(node: Node, pos: int) -> frozenset[int]:
            key = (id(node), pos)
            if key not in memo:
                memo[key] = frozenset(step(node, pos))
            return memo[key]

        def step(node: Node, pos: int) -> Iterator[int]:
            kind = node[0]
            if kind == "lit":
                if text.startswith(node[1], pos):
                    yield pos + len(node[1])
            elif kind == "cls":
                if pos < len(text):
                    hit = any(lo <= text[pos] <= hi for lo, hi in node[2])
                    if hit != node[1]:
                        yield pos + 1
            elif kind == "ref":
                yield from ends(self.rules[node[1]], pos)
            elif kind == "alt":
                for option in node[1]:
                    yield from ends(option, pos)
            elif kind == "seq":
                current = {pos}
                for item in node[1]:
                    current = {e for p in current for e in ends(item, p)}
                yield from current
            else:  # rep
                _, inner, lo, hi = node
                current, seen, count = {pos}, set(), 0
                while current and (hi is None or count <= hi):
                    if count >= lo:
                        yield from current
                    if hi is not None and count == hi:
                        break
                    current = {e for p in current for e in ends(inner, p)} - seen
                    seen |= current
                    count += 1

        return len(text) in ends(self.rules["root"], 0)


def _grammar(schema: Mapping[str, Any]) -> Grammar:
    return Grammar(schema_to_gbnf(schema))


# --- valid values of a schema (the converter's subset), as a hypothesis strategy ------------------


def values_of(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    options = schema.get("anyOf", schema.get("oneOf"))
    if options is not None:
        return st.one_of([values_of(s) for s in options])
    kind = schema["type"]
    if kind == "object":
        keys = list(schema["properties"])
        values = st.tuples(*(values_of(v) for v in schema["properties"].values()))
        return values.map(lambda vs: dict(zip(keys, vs, strict=True)))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 8))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    assert kind == "array"
    prefix = [values_of(s) for s in schema.get("prefixItems", [])]
    lo, hi = schema.get("minItems", 0), schema.get("maxItems", len(prefix))
    rest = schema.get("items")
    item = values_of(rest) if isinstance(rest, dict) else st.nothing()
    return st.integers(lo, hi).flatmap(
        lambda n: st.tuples(*(prefix[i] if i < len(prefix) else item for i in range(n))).map(list)
    )


def _valid(schema: Mapping[str, Any], value: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(schema).validate(value)


REGISTRY = DEFAULT_REGISTRY
SHAPES: dict[str, dict[str, Any]] = {
    "choice": choice_schema(4),
    "compact": compact_plan_schema(REGISTRY),
    "compact_narrowed": compact_plan_schema(REGISTRY, enemy_ids=[91, 7], ally_ids=[3]),
    "compact_places": compact_plan_schema(
        REGISTRY, enemy_ids=[91], ally_ids=[], places=5, cover_places=[0, 3]
    ),
    "compact_first_step": with_first_step(
        compact_plan_schema(REGISTRY, enemy_ids=[91, 7], ally_ids=[], places=4),
        REGISTRY.spec("TakeCover"),
        [2],
    ),
    "verbose": verbose_plan_schema(REGISTRY),
    "packed": packed_schema({12: choice_schema(3), 15: compact_plan_schema(REGISTRY, ids=[4])}),
    "tuple_with_tail": {
        "type": "array",
        "prefixItems": [{"const": "x"}, {"type": "integer", "minimum": -5, "maximum": 5}],
        "items": {"type": "boolean"},
        "minItems": 1,
        "maxItems": 4,
    },
    "strings": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "tag": {"enum": ['a"b', "c\\d", "é", "new\nline"]},
            "none": {"type": "null"},
        },
        "required": ["name", "tag", "none"],
    },
    "one_of": {"oneOf": [{"const": 1}, {"type": "array", "items": {"const": 2}, "maxItems": 2}]},
}


@pytest.mark.parametrize("name", sorted(SHAPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_grammar_accepts_exactly_the_compact_json_of_valid_values(
    name: str, data: st.DataObject
) -> None:
    schema = SHAPES[name]
    grammar = _grammar(schema)
    value = data.draw(values_of(schema))
    _valid(schema, value)
    compact = orjson.dumps(value).decode()
    assert grammar.accepts(compact), compact
    spaced = json.dumps(value, ensure_ascii=False)  # ", " and ": " separators
    if spaced != compact:
        assert not grammar.accepts(spaced), spaced
    assert not grammar.accepts(compact + " ")
    assert not grammar.accepts(" " + compact)


@pytest.mark.parametrize("name", sorted(SHAPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_accepted_answer_begins_with_the_forced_prefix(
    name: str, data: st.DataObject
) -> None:
    schema = SHAPES[name]
    value = data.draw(values_of(schema))
    assert orjson.dumps(value).decode().startswith(forced_prefix(schema))


@pytest.mark.parametrize("name", sorted(set(SHAPES) - {"strings"}))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_alphabet_holds_every_character_an_answer_writes(
    name: str, data: st.DataObject
) -> None:
    alphabet = grammar_alphabet(schema_to_gbnf(SHAPES[name]))
    assert alphabet is not None
    assert set(orjson.dumps(data.draw(values_of(SHAPES[name]))).decode()) <= alphabet


def test_the_alphabet_of_a_grammar_it_cannot_list_is_none() -> None:
    # A JSON string may hold any character: its grammar's class is negated.
    assert grammar_alphabet(schema_to_gbnf(SHAPES["strings"])) is None
    assert grammar_alphabet('root ::= "a" .') is None
    assert grammar_alphabet('root ::= "caf\\u00e9"') is None  # an escape it does not read
    assert grammar_alphabet('root ::= "é"') is None  # not printable ASCII
    assert grammar_alphabet('root ::= "\x07"') is None
    assert grammar_alphabet('root ::= "open') is None
    assert grammar_alphabet("root ::= [a-") is None


def test_the_alphabet_reads_literals_classes_escapes_and_skips_names_and_comments() -> None:
    gbnf = (
        "# digits [0-9] and x, in a comment\n"
        'root ::= "[\\"" item "\\"]" [a-c] [\\-_] [\\]] "\\\\"\n'
        'item ::= [1-3]+ | "\\x41"\n'
    )
    assert grammar_alphabet(gbnf) == frozenset('["]abc-_123A\\')
    assert grammar_alphabet('root ::= "b" | "a" | [z-z]') == frozenset("abz")


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("choice", '{"c":'),
        ("compact", '{"plan":[["'),
        ("compact_places", '{"plan":[["'),
        ("compact_first_step", '{"plan":[["C",2]'),
        ("verbose", '{"steps":[{"act":"'),
        ("packed", '[{"id":12,"c":'),
        ("tuple_with_tail", '["x"'),
        ("strings", '{"name":"'),
        ("one_of", ""),
    ],
)
def test_the_forced_prefix_goes_as_far_as_the_answers_agree(name: str, prefix: str) -> None:
    assert forced_prefix(SHAPES[name]) == prefix


def test_forced_prefix_of_whole_fixed_values_and_bad_schemas() -> None:
    fixed = {
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"type": "null"}, "c": {"enum": ["x"]}},
        "required": ["a", "b", "c"],
    }
    assert forced_prefix(fixed) == '{"a":1,"b":null,"c":"x"}'
    assert forced_prefix({"type": "array", "items": False}) == "[]"
    pair = {"const": 3}
    assert forced_prefix({"type": "array", "items": pair, "minItems": 2, "maxItems": 2}) == "[3,3]"
    assert forced_prefix({"enum": [10, 12]}) == "1"
    assert forced_prefix({"anyOf": [{"const": "ab"}, {"const": "ac"}]}) == '"a'
    with pytest.raises(ConfigError, match="unsupported"):
        forced_prefix({"type": "number"})


def test_real_plan_schemas_reject_wrong_values() -> None:
    compact = _grammar(compact_plan_schema(REGISTRY, enemy_ids=[91, 7], ally_ids=[3]))
    assert compact.accepts('{"plan":[["M",3,4],["A",91],["R"]]}')
    assert not compact.accepts('{"plan":[["A",92]]}')  # not a visible enemy
    assert not compact.accepts('{"plan":[["H",91]]}')  # an enemy is not an ally
    assert not compact.accepts('{"plan":[]}')  # minItems 1
    assert not compact.accepts('{"plan":[["R"],["R"],["R"],["R"],["R"]]}')  # maxItems 4
    assert not compact.accepts('{"plan":[["M",3]]}')  # MoveTo takes x and y
    assert not compact.accepts('{"plan":[["W",0]]}')  # ticks >= 1
    assert not compact.accepts('{"plan":[["M",03,4]]}')  # no leading zeros
    places = _grammar(compact_plan_schema(REGISTRY, enemy_ids=[91], ally_ids=[], places=3))
    assert places.accepts('{"plan":[["M",2],["A",91],["T",0]]}')
    assert not places.accepts('{"plan":[["M",3]]}')  # only places 0..2
    assert not places.accepts('{"plan":[["M",6,8],["A",91]]}')  # a cell is not a place
    assert not places.accepts('{"plan":[["H",12]]}')  # nobody to heal: Heal is left out
    packed = _grammar(packed_schema({12: choice_schema(3), 15: choice_schema(2)}))
    assert packed.accepts('[{"id":12,"c":2},{"id":15,"c":1}]')
    assert not packed.accepts('[{"id":15,"c":1},{"id":12,"c":2}]')  # order is fixed
    assert not packed.accepts('[{"id":12,"c":2},{"id":15,"c":2}]')  # 15 has two candidates
    assert not packed.accepts('[{"id":12,"c":2}]')


@settings(max_examples=200, deadline=None)
@given(
    lo=st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    span=st.integers(0, 10**6),
    probe=st.integers(-(10**7), 10**7),
    offset=st.integers(-3, 3),
)
def test_integer_ranges_are_exact(lo: int | None, span: int, probe: int, offset: int) -> None:
    hi = None if lo is None else lo + span
    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema |= {"minimum": lo, "maximum": hi}
    grammar = _grammar(schema)
    # Probe near both ends, where digit-range splitting goes wrong, and anywhere.
    for n in (probe, (lo or 0) + offset, (hi or 0) + offset):
        inside = lo is None or hi is None or lo <= n <= hi
        assert grammar.accepts(str(n)) == inside, (schema, n)
    assert not grammar.accepts("-0")
    assert not grammar.accepts("007")


@pytest.mark.parametrize(
    ("bounds", "inside", "outside"),
    [
        ({"exclusiveMinimum": 0, "exclusiveMaximum": 10}, [1, 9], [0, 10]),
        ({"minimum": 0.5, "maximum": 2.5}, [1, 2], [0, 3]),
        ({"minimum": 7}, [7, 10**17], [6, -1, 10**18]),
        ({"maximum": -3}, [-3, -(10**17)], [-2, 0]),
    ],
)
def test_integer_bounds_of_every_kind(
    bounds: dict[str, Any], inside: list[int], outside: list[int]
) -> None:
    grammar = _grammar({"type": "integer", **bounds})
    assert all(grammar.accepts(str(n)) for n in inside)
    assert not any(grammar.accepts(str(n)) for n in outside)


@pytest.mark.parametrize(
    ("schema", "counts"),
    [
        ({"type": "array", "items": {"const": 0}, "minItems": 2, "maxItems": 5}, {2, 3, 4, 5}),
        ({"type": "array", "items": {"const": 0}, "maxItems": 1}, {0, 1}),
        ({"type": "array", "items": {"const": 0}}, set(range(9))),
        ({"type": "array", "prefixItems": [{"const": 0}] * 3}, {0, 1, 2, 3}),
        ({"type": "array", "prefixItems": [{"const": 0}] * 3, "minItems": 2}, {2, 3}),
        ({"type": "array", "prefixItems": [{"const": 0}] * 2, "items": False}, {0, 1, 2}),
        ({"type": "array", "items": False}, {0}),
        (
            {"type": "array", "prefixItems": [{"const": 0}], "items": {"const": 0}, "minItems": 3},
            set(range(3, 9)),
        ),
    ],
)
def test_array_lengths(schema: dict[str, Any], counts: set[int]) -> None:
    grammar = _grammar(schema)
    for n in range(9):
        assert grammar.accepts("[" + ",".join(["0"] * n) + "]") == (n in counts), n


def test_strings_count_escapes_as_one_character() -> None:
    grammar = _grammar({"type": "string", "minLength": 1, "maxLength": 3})
    for value in ["a", "abc", 'a"b', "\\\n", "é€😀", "\u0001"]:
        assert grammar.accepts(orjson.dumps(value).decode()), value
    assert grammar.accepts('"\\u00e9"')
    assert not grammar.accepts('""')
    assert not grammar.accepts('"abcd"')
    assert not grammar.accepts('"a\nb"')  # a raw control character is not JSON
    assert _grammar({"type": "string", "maxLength": 0}).accepts('""')


def test_recursive_definitions() -> None:
    schema = {
        "$defs": {
            "nest": {
                "anyOf": [
                    {"const": 0},
                    {"type": "array", "items": {"$ref": "#/$defs/nest"}, "maxItems": 2},
                ]
            }
        },
        "$ref": "#/$defs/nest",
    }
    grammar = _grammar(schema)
    assert grammar.accepts("[[0,[]],0]")
    assert not grammar.accepts("[0,0,0]")


def test_rules_are_shared_and_output_is_stable() -> None:
    schema = verbose_plan_schema(REGISTRY)
    gbnf = schema_to_gbnf(schema)
    assert gbnf == schema_to_gbnf(verbose_plan_schema(REGISTRY))
    # Arguments with the same bounds (x and y...) share one integer rule.
    bounds = {(a.lo, a.hi) for spec in REGISTRY.actions for a in spec.args}
    assert sum(line.split(" ::= ")[0].endswith("-int") for line in gbnf.splitlines()) == len(bounds)
    assert " ws" not in gbnf and "[ \\t\\n]" not in gbnf


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "pattern": "^a$"}, "'pattern'"),
        ({"type": "number"}, "'number'"),
        ({"type": ["integer", "null"]}, "['integer', 'null']"),
        ({"allOf": [{"type": "integer"}]}, "'allOf'"),
        ({"not": {"type": "integer"}}, "'not'"),
        ({"type": "integer", "multipleOf": 2}, "'multipleOf'"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "object", "properties": {"a": {"const": 1}}}, "optional properties"),
        ({"type": "object", "properties": {}, "required": ["a"]}, "'required'"),
        ({"$ref": "https://example.com/s.json"}, "'$ref'"),
        ({"$ref": "#/$defs/missing"}, "'$ref'"),
        ({"enum": []}, "'enum'"),
        ({"enum": [1.5]}, "float"),
        ({"const": {"a": 1}}, "dict"),
        ({"type": "array", "items": True}, "'items' or 'prefixItems'"),
        ({"type": "array", "items": {"const": 1}, "minItems": 3, "maxItems": 2}, "minItems"),
        ({"type": "integer", "minimum": 3, "maximum": 2}, "empty integer range"),
        ({"type": "object", "properties": {"a": True}, "required": ["a"]}, "boolean schema"),
        ({"description": "anything"}, "without 'type'"),
        ({"type": "array", "items": {"type": "string", "format": "date"}}, "'format'"),
    ],
)
def test_unsupported_schemas_raise_config_error_naming_it(
    schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        schema_to_gbnf(schema)
    assert named in str(info.value)


def test_errors_say_where() -> None:
    schema = compact_plan_schema(REGISTRY)
    schema["properties"]["plan"]["items"]["anyOf"][2]["prefixItems"][1]["pattern"] = "x"
    with pytest.raises(ConfigError, match=r"#/properties/plan/items/anyOf/2/prefixItems/1"):
        schema_to_gbnf(schema)


def test_deep_schemas_are_refused() -> None:
    schema: dict[str, Any] = {"const": 0}
    for _ in range(40):
        schema = {"type": "array", "prefixItems": [schema]}
    with pytest.raises(ConfigError, match="deeper"):
        schema_to_gbnf(schema)


# --- the cache ------------------------------------------------------------------------------------


def test_cache_gives_the_same_grammar_for_the_same_schema() -> None:
    pytest.importorskip("llama_cpp")
    cache = GrammarCache(maxsize=2)
    first = cache.get(choice_schema(3))
    again = cache.get(choice_schema(3))  # an equal, distinct dict
    assert again is first and again.grammar is first.grammar
    assert (cache.hits, cache.misses) == (1, 1)
    assert first.gbnf == schema_to_gbnf(choice_schema(3))


def test_cache_keys_keep_property_order_and_stay_bounded() -> None:
    pytest.importorskip("llama_cpp")
    ab = {
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"const": 2}},
        "required": ["a", "b"],
    }
    ba = {
        "type": "object",
        "properties": {"b": {"const": 2}, "a": {"const": 1}},
        "required": ["a", "b"],
    }
    assert schema_key(ab) != schema_key(ba)
    cache = GrammarCache(maxsize=2)
    g_ab, g_ba = cache.get(ab), cache.get(ba)
    assert g_ab is not g_ba
    assert Grammar(g_ab.gbnf).accepts('{"a":1,"b":2}')
    assert Grammar(g_ba.gbnf).accepts('{"b":2,"a":1}')
    cache.get(choice_schema(2))
    assert len(cache) == 2
    assert cache.get(ab) is not g_ab  # the oldest entry was evicted


def test_cache_refuses_bad_size_and_unserialisable_schema() -> None:
    with pytest.raises(ConfigError):
        GrammarCache(maxsize=0)
    with pytest.raises(ConfigError):
        schema_key({"const": object()})


# --- llama.cpp's own parser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    """The default model's vocabulary alone (no weights: quick)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from aiplanner.model_path import resolve_model_path

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(resolve_model_path()).encode(), params)
    assert model, "llama.cpp could not read the vocabulary"
    try:
        yield llama_cpp.llama_model_get_vocab(model)
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_llama_cpp_parses_every_generated_grammar(name: str, vocab: Any) -> None:
    from llama_cpp.llama_grammar import LlamaGrammar

    gbnf = schema_to_gbnf(SHAPES[name])
    assert LlamaGrammar.from_string(gbnf, verbose=False) is not None
    verify_gbnf(gbnf, vocab)  # raises ConfigError if llama.cpp's parser refuses it


@pytest.mark.model
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer"},
        {"type": "string", "minLength": 2},
        {"type": "string", "maxLength": 0},
        {"type": "array", "items": {"type": "null"}},
        {
            "$defs": {
                "n": {
                    "anyOf": [
                        {"const": 0},
                        {"type": "array", "prefixItems": [{"$ref": "#/$defs/n"}]},
                    ]
                }
            },
            "$ref": "#/$defs/n",
        },
    ],
)
def test_llama_cpp_parses_edge_shapes(schema: dict[str, Any], vocab: Any) -> None:
    verify_gbnf(schema_to_gbnf(schema), vocab)


@pytest.mark.model
def test_verify_gbnf_catches_what_llama_cpp_rejects(vocab: Any) -> None:
    with pytest.raises(ConfigError, match="rejected"):
        verify_gbnf("root ::= undefined-rule\n", vocab)
