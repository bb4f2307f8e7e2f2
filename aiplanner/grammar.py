"""JSON Schema to GBNF, with no optional whitespace, and a bounded cache of compiled grammars.

The grammars servers derive from a schema allow whitespace and newlines between JSON tokens, and a
135M model spends real tokens on them (see FINDINGS.md). The grammar built here admits exactly
one spelling of each value: the compact one ``orjson.dumps`` writes, keys in the order the schema
declares them.

Supported (the shapes our plan schemas use): ``type`` ``object`` (``properties``, all of them in
``required``), ``array`` (``prefixItems``, ``items`` as a schema or ``false``, ``minItems``,
``maxItems``), ``integer`` (``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``), ``string`` (``minLength``, ``maxLength``), ``boolean`` and ``null``;
``enum``/``const`` of integers, strings, booleans and null; ``anyOf``/``oneOf``; local ``$ref``
into ``$defs``/``definitions``. Anything else raises :class:`~aiplanner.errors.ConfigError`
naming the keyword and where it is.

Every string the grammar accepts is valid against the schema; the converse need not hold
(``oneOf`` is treated as ``anyOf``, an integer has at most 18 digits, extra properties are never
generated).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from aiplanner.errors import ConfigError

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = [
    "CompiledGrammar",
    "GrammarCache",
    "forced_prefix",
    "grammar_alphabet",
    "schema_key",
    "schema_to_gbnf",
    "verify_gbnf",
]

# Keywords that never change which values are valid.
_ANNOTATIONS = frozenset(
    {
        "$comment",
        "$id",
        "$schema",
        "default",
        "deprecated",
        "description",
        "examples",
        "readOnly",
        "title",
        "writeOnly",
    }
)
_DEFS_KEYS = ("$defs", "definitions")
_ALLOWED: Mapping[str, frozenset[str]] = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "array": frozenset({"type", "prefixItems", "items", "minItems", "maxItems"}),
    "integer": frozenset({"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "string": frozenset({"type", "minLength", "maxLength"}),
    "boolean": frozenset({"type"}),
    "null": frozenset({"type"}),
}
# An integer without a bound still gets one: 18 digits fit an int64, and an unbounded digit run
# is a way for a small model to ramble until max_tokens.
_MAX_DIGITS = 18
_INT_LIMIT = 10**_MAX_DIGITS - 1
_MAX_DEPTH = 32
_STRING_CHAR = r'[^"\\\x00-\x1f] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4}'
_NAME_JUNK = re.compile(r"[^a-zA-Z0-9]+")

_Digits = list[tuple[int, int]]  # one (low, high) digit range per position


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """Return a GBNF grammar (root rule ``root``) for the compact JSON texts valid under ``schema``.

    Raises :class:`ConfigError` naming the keyword and its location when ``schema`` uses
    something this converter does not support, or is unsatisfiable (``minItems`` > ``maxItems``,
    an empty integer range, an empty ``enum``...).
    """
    return _Converter(schema).convert()


def forced_prefix(schema: Mapping[str, Any]) -> str:
    """The text every answer the grammar of ``schema`` accepts begins with (``{"plan":[["`` for
    the compact plan form, ``{"c":`` for a guided choice): an engine can evaluate it with the
    prompt instead of generating it one token per decode. Found from the schema the way
    :func:`schema_to_gbnf` writes each value, stopping where the answers first differ.

    Raises :class:`ConfigError` where :func:`schema_to_gbnf` does.
    """
    return _compile(schema)[1]


def grammar_alphabet(gbnf: str) -> frozenset[str] | None:
    """Every character a GBNF grammar's terminals can write, or ``None`` when they cannot be
    listed in printable ASCII (a negated class such as a JSON string's ``[^"\\]``, ``.``, a
    character outside ``' '``-``'~'``, or text this reader does not follow).

    With the whole alphabet known, an engine can ask the grammar about each of its characters
    and learn when exactly one may come next: the text the grammar forces (``"]`` after a
    plan's code, ``["`` after ``],``), which it can then feed without generating it.
    """
    chars: set[str] = set()
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c == "#":  # a comment, to the end of the line
            end = gbnf.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == '"':
            i += 1
            while i < n and gbnf[i] != '"':
                ch, i = _gbnf_char(gbnf, i)
                if ch is None:
                    return None
                chars.add(ch)
            if i >= n:
                return None
            i += 1
        elif c == "[":
            i += 1
            if i < n and gbnf[i] == "^":
                return None
            while i < n and gbnf[i] != "]":
                low, i = _gbnf_char(gbnf, i)
                if low is None:
                    return None
                high: str | None = low
                if i + 1 < n and gbnf[i] == "-" and gbnf[i + 1] != "]":
                    high, i = _gbnf_char(gbnf, i + 1)
                if high is None or high < low:
                    return None
                chars.update(chr(k) for k in range(ord(low), ord(high) + 1))
            if i >= n:
                return None
            i += 1
        elif c == ".":
            return None
        else:
            i += 1
    if any(not " " <= ch <= "~" for ch in chars):
        return None
    return frozenset(chars)


_GBNF_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "\\": "\\",
    '"': '"',
    "[": "[",
    "]": "]",
    "-": "-",
}


def _gbnf_char(text: str, i: int) -> tuple[str | None, int]:
    """The character a GBNF literal or class spells at ``text[i]`` and where the next begins;
    ``None`` for an escape this reader does not take."""
    if text[i] != "\\":
        return text[i], i + 1
    if i + 1 >= len(text):
        return None, i + 1
    e = text[i + 1]
    if e in _GBNF_ESCAPES:
        return _GBNF_ESCAPES[e], i + 2
    if e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
        return chr(int(text[i + 2 : i + 4], 16)), i + 4
    return None, i + 2


def _compile(schema: Mapping[str, Any]) -> tuple[str, str]:
    """:func:`schema_to_gbnf` and :func:`forced_prefix` of ``schema`` from one conversion."""
    converter = _Converter(schema)
    gbnf = converter.convert()  # validates the whole schema; the prefix walk can then trust it
    return gbnf, converter.prefix(schema, 0)[0]


def schema_key(schema: Mapping[str, Any]) -> bytes:
    """The cache key of ``schema``: its compact JSON, keys in their declared order.

    Key order is kept on purpose: it decides the order of properties in the grammar.
    Raises :class:`ConfigError` if ``schema`` holds something JSON cannot represent.
    """
    try:
        return orjson.dumps(_plain(schema))
    except TypeError as exc:
        raise ConfigError(f"schema is not JSON-serialisable: {exc}") from exc


def verify_gbnf(gbnf: str, vocab: Any) -> None:
    """Check that llama.cpp itself parses ``gbnf`` against ``vocab`` (a ``llama_vocab`` pointer).

    ``LlamaGrammar.from_string`` only stores the text; llama.cpp parses it when a sampler is
    built, and a grammar it rejects gives a NULL sampler that must never reach a sampler chain.
    Raises :class:`ConfigError` when llama.cpp rejects the grammar.
    """
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        head = gbnf[:200].replace("\n", " / ")
        raise ConfigError(f"llama.cpp rejected the generated grammar: {head}")
    llama_cpp.llama_sampler_free(sampler)


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
class CompiledGrammar:
    """A schema's GBNF text and the ``llama_cpp.LlamaGrammar`` built from it.

    Compared by identity: an engine can remember (weakly) which grammars it has checked.
    """

    gbnf: str
    grammar: LlamaGrammar
    prefix: str = ""  # what every accepted answer begins with (:func:`forced_prefix`)


class GrammarCache:
    """A bounded, thread-safe LRU cache: schema → :class:`CompiledGrammar`.

    The same schema (by :func:`schema_key`) always gives back the same object, holding the same
    ``LlamaGrammar``. ``llama_cpp`` is imported on first conversion only: the rest of aiplanner
    works without the ``embedded`` extra.
    """

    __slots__ = ("_entries", "_lock", "hits", "maxsize", "misses")

    def __init__(self, maxsize: int = 64) -> None:
        if maxsize <= 0:
            raise ConfigError(f"GrammarCache maxsize must be positive, got {maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, schema: Mapping[str, Any]) -> CompiledGrammar:
        """Return the grammar of ``schema``, converting it on first sight.

        Raises :class:`ConfigError` for an unsupported schema (see :func:`schema_to_gbnf`).
        """
        key = schema_key(schema)
        with self._lock:
            grammar = self._entries.get(key)
            if grammar is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return grammar
        # Convert outside the lock: a large schema must not stall other callers.
        from llama_cpp.llama_grammar import LlamaGrammar

        gbnf, prefix = _compile(schema)
        compiled = CompiledGrammar(gbnf, LlamaGrammar.from_string(gbnf, verbose=False), prefix)
        with self._lock:
            grammar = self._entries.setdefault(key, compiled)
            self._entries.move_to_end(key)
            self.misses += 1
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return grammar

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class _Converter:
    """One conversion: rules are deduplicated by body so repeated shapes share a rule."""

    __slots__ = ("_by_body", "_def_rules", "_defs", "_names", "_root", "_rules")

    def __init__(self, root: Mapping[str, Any]) -> None:
        if not isinstance(root, Mapping):
            raise ConfigError(f"a JSON Schema must be an object, got {type(root).__name__}")
        self._root = root
        self._rules: dict[str, str] = {}  # name -> body, in creation order
        self._by_body: dict[str, str] = {}
        self._names: set[str] = {"root"}
        self._def_rules: dict[str, str] = {}  # "$ref" target -> rule name
        defs: dict[str, Any] = {}
        for key in _DEFS_KEYS:
            found = root.get(key)
            if found is None:
                continue
            if not isinstance(found, Mapping):
                raise ConfigError(f"'{key}' must be an object at #")
            defs.update({f"#/{key}/{name}": sub for name, sub in found.items()})
        self._defs = defs

    def convert(self) -> str:
        body = self._expr(self._root, "#", "value", 0)
        lines = [f"root ::= {body}"]
        lines.extend(f"{name} ::= {rule}" for name, rule in self._rules.items())
        return "\n".join(lines) + "\n"

    # --- rules -------------------------------------------------------------------------------

    def _rule(self, hint: str, body: str) -> str:
        existing = self._by_body.get(body)
        if existing is not None:
            return existing
        name = self._fresh(hint)
        self._rules[name] = body
        self._by_body[body] = name
        return name

    def _fresh(self, hint: str) -> str:
        base = _NAME_JUNK.sub("-", hint).strip("-").lower() or "r"
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}-{n}"
        self._names.add(name)
        return name

    # --- the forced prefix -----------------------------------------------------------------

    def prefix(self, schema: Any, depth: int) -> tuple[str, bool]:
        """The text every value of (an already converted) ``schema`` begins with, and whether
        that text is the whole value. Mirrors :meth:`_expr` and the methods it calls."""
        if depth > _MAX_DEPTH:
            return "", False
        if "$ref" in schema:
            return self.prefix(self._defs[schema["$ref"]], depth + 1)
        if "const" in schema:
            return _json_scalar(schema["const"], "#"), True
        if "enum" in schema:
            texts = list(dict.fromkeys(_json_scalar(v, "#") for v in schema["enum"]))
            return (texts[0], True) if len(texts) == 1 else (_common(texts), False)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                found = [self.prefix(sub, depth + 1) for sub in schema[combinator]]
                if all(done for _, done in found) and len({text for text, _ in found}) == 1:
                    return found[0]
                return _common([text for text, _ in found]), False
        kind = schema["type"]
        if kind == "object":
            text = ""
            for i, (name, sub) in enumerate(schema.get("properties", {}).items()):
                text += ("," if i else "{") + orjson.dumps(name).decode() + ":"
                value, done = self.prefix(sub, depth + 1)
                text += value
                if not done:
                    return text, False
            return (text + "}" if text else "{}"), True
        if kind == "array":
            firsts = schema.get("prefixItems", [])
            items = schema.get("items")
            lo, hi = schema.get("minItems") or 0, schema.get("maxItems")
            if not isinstance(items, Mapping):  # nothing past prefixItems (as in _array)
                hi = len(firsts) if hi is None else min(hi, len(firsts))
            text = "["
            for i in range(lo):  # the elements every answer has
                value, done = self.prefix(firsts[i] if i < len(firsts) else items, depth + 1)
                text += ("," if i else "") + value
                if not done:
                    return text, False
            return (text + "]", True) if hi == lo else (text, False)
        if kind == "string":
            return ('""', True) if schema.get("maxLength") == 0 else ('"', False)
        if kind == "null":
            return "null", True
        return "", False  # an integer or a boolean: the first character varies

    # --- schemas -----------------------------------------------------------------------------

    def _expr(self, schema: Any, where: str, hint: str, depth: int) -> str:
        """A GBNF expression for ``schema`` that can stand as one item of a sequence."""
        if depth > _MAX_DEPTH:
            raise ConfigError(f"schema nested deeper than {_MAX_DEPTH} levels at {where}")
        if isinstance(schema, bool):
            raise ConfigError(f"boolean schema {str(schema).lower()} is unsupported at {where}")
        if not isinstance(schema, Mapping):
            raise ConfigError(f"expected a schema object at {where}, got {type(schema).__name__}")
        keys = set(schema) - _ANNOTATIONS - ({*_DEFS_KEYS} if where == "#" else set())
        if "$ref" in schema:
            _only(keys, {"$ref"}, where)
            return self._ref(schema["$ref"], where, depth)
        if "const" in schema or "enum" in schema:
            return self._enum(schema, keys, where, hint)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                _only(keys, {combinator}, where)
                return self._any_of(schema[combinator], f"{where}/{combinator}", hint, depth)
        kind = schema.get("type")
        if kind is None:
            unknown = sorted(keys)
            detail = f" (it has {', '.join(map(repr, unknown))})" if unknown else ""
            raise ConfigError(
                f"schema without 'type', 'enum', 'const' or 'anyOf' at {where}{detail}"
            )
        if not isinstance(kind, str) or kind not in _ALLOWED:
            raise ConfigError(f"unsupported JSON Schema type {kind!r} at {where}")
        _only(keys, _ALLOWED[kind], where)
        if kind == "object":
            return self._object(schema, where, hint, depth)
        if kind == "array":
            return self._array(schema, where, hint, depth)
        if kind == "integer":
            return self._integer(schema, where, hint)
        if kind == "string":
            return self._string(schema, where, hint)
        if kind == "boolean":
            return self._rule("bool", '"true" | "false"')
        return '"null"'

    def _ref(self, target: Any, where: str, depth: int) -> str:
        if not isinstance(target, str) or target not in self._defs:
            raise ConfigError(
                f"unsupported '$ref' {target!r} at {where}: only #/$defs/<name> of this schema"
            )
        name = self._def_rules.get(target)
        if name is None:
            # Register the name before converting the body so recursive definitions terminate.
            name = self._fresh("def-" + target.rsplit("/", 1)[-1])
            self._def_rules[target] = name
            self._rules[name] = ""
            self._rules[name] = self._expr(self._defs[target], target, name, depth + 1)
        return name

    def _enum(self, schema: Mapping[str, Any], keys: set[str], where: str, hint: str) -> str:
        _only(keys, {"type", "enum", "const"}, where)
        if "const" in schema and "enum" in schema:
            raise ConfigError(f"both 'const' and 'enum' at {where}")
        if "const" in schema:
            return _literal(_json_scalar(schema["const"], f"{where}/const"))
        values = schema["enum"]
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"'enum' must be a non-empty array at {where}")
        texts = [_json_scalar(v, f"{where}/enum/{i}") for i, v in enumerate(values)]
        alternatives = list(dict.fromkeys(texts))
        if len(alternatives) == 1:
            return _literal(alternatives[0])
        return self._rule(hint, " | ".join(_literal(t) for t in alternatives))

    def _any_of(self, options: Any, where: str, hint: str, depth: int) -> str:
        if not isinstance(options, Sequence) or isinstance(options, str) or not options:
            raise ConfigError(f"expected a non-empty array of schemas at {where}")
        exprs = [
            self._expr(sub, f"{where}/{i}", f"{hint}-{i}", depth + 1)
            for i, sub in enumerate(options)
        ]
        unique = list(dict.fromkeys(exprs))
        if len(unique) == 1:
            return unique[0]
        return self._rule(hint, " | ".join(unique))

    def _object(self, schema: Mapping[str, Any], where: str, hint: str, depth: int) -> str:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, Mapping):
            raise ConfigError(f"'properties' must be an object at {where}")
        if not isinstance(required, Sequence) or isinstance(required, str):
            raise ConfigError(f"'required' must be an array at {where}")
        missing = [r for r in required if r not in props]
        if missing:
            raise ConfigError(f"'required' names undeclared properties {missing} at {where}")
        optional = [p for p in props if p not in required]
        if optional:
            raise ConfigError(
                f"optional properties are unsupported (add them to 'required'): {optional} "
                f"at {where}"
            )
        extra = schema.get("additionalProperties", False)
        if not isinstance(extra, bool | Mapping):
            raise ConfigError(f"'additionalProperties' must be a boolean or schema at {where}")
        parts: list[str] = []
        for i, (name, sub) in enumerate(props.items()):
            key = orjson.dumps(name).decode()
            prefix = ("," if i else "{") + key + ":"
            parts.append(_literal(prefix))
            parts.append(self._expr(sub, f"{where}/properties/{name}", name, depth + 1))
        parts.append(_literal("}" if parts else "{}"))
        return self._rule(hint, " ".join(parts))

    def _array(self, schema: Mapping[str, Any], where: str, hint: str, depth: int) -> str:
        prefix_schemas = schema.get("prefixItems", [])
        if not isinstance(prefix_schemas, Sequence) or isinstance(prefix_schemas, str):
            raise ConfigError(f"'prefixItems' must be an array at {where}")
        lo = _count(schema, "minItems", where) or 0
        hi = _count(schema, "maxItems", where)
        items = schema.get("items")
        k = len(prefix_schemas)
        if items is False or items is None or items is True:
            if items is not False and k == 0:
                raise ConfigError(f"an array needs 'items' or 'prefixItems' at {where}")
            # Elements past prefixItems would be unconstrained (or forbidden): stop at k.
            hi = k if hi is None else min(hi, k)
        if hi is not None and lo > hi:
            raise ConfigError(f"unsatisfiable array: minItems {lo} > maxItems {hi} at {where}")
        elements = [
            self._expr(sub, f"{where}/prefixItems/{i}", f"{hint}-{i}", depth + 1)
            for i, sub in enumerate(prefix_schemas[: hi if hi is not None else k])
        ]
        item = ""
        if isinstance(items, Mapping):
            item = self._expr(items, f"{where}/items", f"{hint}-item", depth + 1)
        # Positions [0, lo) are mandatory; [lo, fixed) optional and nested (element i only if
        # element i-1 is there); past ``fixed`` comes a homogeneous run of ``item``.
        fixed = max(lo, len(elements))
        elements += [item] * (fixed - len(elements))
        tail = _run(item, fixed, None if hi is None else hi - fixed) if item else ""
        for i in range(fixed - 1, lo - 1, -1):
            head = f'"," {elements[i]}' if i else elements[i]
            tail = f"({head} {tail})?" if tail else f"({head})?"
        mandatory = ' "," '.join(elements[:lo])
        body = " ".join(p for p in ('"["', mandatory, tail, '"]"') if p)
        return self._rule(hint, body)

    def _integer(self, schema: Mapping[str, Any], where: str, hint: str) -> str:
        lo = -_INT_LIMIT
        hi = _INT_LIMIT
        for key, bound, is_low, strict in (
            ("minimum", schema.get("minimum"), True, False),
            ("exclusiveMinimum", schema.get("exclusiveMinimum"), True, True),
            ("maximum", schema.get("maximum"), False, False),
            ("exclusiveMaximum", schema.get("exclusiveMaximum"), False, True),
        ):
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ConfigError(f"'{key}' must be a number at {where}")
            value = _ceil(bound) if is_low else _floor(bound)
            if strict and value == bound:
                value += 1 if is_low else -1
            lo, hi = (max(lo, value), hi) if is_low else (lo, min(hi, value))
        if lo > hi:
            raise ConfigError(f"empty integer range [{lo}, {hi}] at {where}")
        return self._rule(f"{hint}-int", _int_range(lo, hi))

    def _string(self, schema: Mapping[str, Any], where: str, hint: str) -> str:
        lo = _count(schema, "minLength", where) or 0
        hi = _count(schema, "maxLength", where)
        if hi is not None and lo > hi:
            raise ConfigError(f"unsatisfiable string: minLength {lo} > maxLength {hi} at {where}")
        char = self._rule("char", _STRING_CHAR)
        if hi is None:
            reps = "*" if lo == 0 else f"{{{lo},}}"
        elif lo == hi:
            reps = f"{{{lo}}}"
        else:
            reps = f"{{{lo},{hi}}}"
        return self._rule(f"{hint}-str", f'"\\"" {char}{reps} "\\""' if hi != 0 else '"\\"\\""')


def _common(texts: Sequence[str]) -> str:
    """The longest text all of ``texts`` begin with."""
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _only(keys: set[str], allowed: set[str] | frozenset[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise ConfigError(f"unsupported JSON Schema keyword {extra[0]!r} at {where}")


def _count(schema: Mapping[str, Any], key: str, where: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"'{key}' must be a non-negative integer at {where}")
    return value


def _run(item: str, start: int, most: int | None) -> str:
    """Up to ``most`` (None: any number of) further ``item`` elements after position ``start``."""
    if most == 0:
        return ""
    if start:
        return f'("," {item}){_reps(most)}'
    if most == 1:
        return f"({item})?"
    return f'({item} ("," {item}){_reps(None if most is None else most - 1)})?'


def _reps(most: int | None) -> str:
    if most is None:
        return "*"
    return "?" if most == 1 else f"{{0,{most}}}"


def _ceil(x: float) -> int:
    return int(x) if x == int(x) or x < 0 else int(x) + 1


def _floor(x: float) -> int:
    return int(x) if x == int(x) or x > 0 else int(x) - 1


def _json_scalar(value: Any, where: str) -> str:
    if value is None or isinstance(value, bool | int | str):
        return orjson.dumps(value).decode()
    raise ConfigError(
        f"enum/const values must be integers, strings, booleans or null; "
        f"got {type(value).__name__} at {where}"
    )


def _literal(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- integer ranges ------------------------------------------------------------------------------


def _int_range(lo: int, hi: int) -> str:
    """GBNF alternatives matching exactly the decimal integers in [lo, hi], no leading zeros."""
    alternatives: list[str] = []
    if lo < 0:
        magnitudes = _nonneg(max(1, -hi), -lo)
        alternatives += [f'"-" {p}' for p in magnitudes]
    if hi >= 0:
        alternatives += _nonneg(max(0, lo), hi)
    return " | ".join(f"({a})" if " " in a else a for a in alternatives)


def _nonneg(lo: int, hi: int) -> list[str]:
    """Sequences matching the integers in [lo, hi], 0 <= lo <= hi."""
    out: list[str] = []
    full: list[int] = []  # widths whose every number is in range, merged into one alternative
    for width in range(len(str(lo)), len(str(hi)) + 1):
        a = max(lo, 10 ** (width - 1) if width > 1 else 0)
        b = min(hi, 10**width - 1)
        if width > 1 and a == 10 ** (width - 1) and b == 10**width - 1:
            full.append(width)
        elif a <= b:
            out += [_render(p) for p in _same_width(str(a), str(b))]
    if full:
        low, high = full[0] - 1, full[-1] - 1
        reps = f"{{{low}}}" if low == high else f"{{{low},{high}}}"
        out.append(f"[1-9] [0-9]{reps}" if high > 1 or low != high else "[1-9] [0-9]")
    return out


def _same_width(a: str, b: str) -> list[_Digits]:
    """Digit patterns covering [a, b] for two decimal strings of one width, a <= b."""
    if not a:
        return [[]]
    if a == b:
        return [[(int(c), int(c)) for c in a]]
    first, last = int(a[0]), int(b[0])
    if first == last:
        return [[(first, first), *p] for p in _same_width(a[1:], b[1:])]
    rest = len(a) - 1
    out: list[_Digits] = []
    if a[1:] != "0" * rest:
        out += [[(first, first), *p] for p in _same_width(a[1:], "9" * rest)]
        first += 1
    tail: list[_Digits] = []
    if b[1:] != "9" * rest:
        tail = [[(last, last), *p] for p in _same_width("0" * rest, b[1:])]
        last -= 1
    if first <= last:
        out.append([(first, last), *[(0, 9)] * rest])
    return out + tail


def _render(pattern: _Digits) -> str:
    parts: list[str] = []
    fixed = ""
    for (low, high), group in itertools.groupby(pattern):
        n = len(list(group))
        if low == high:
            fixed += str(low) * n
            continue
        if fixed:
            parts.append(f'"{fixed}"')
            fixed = ""
        parts.append(f"[{low}-{high}]" + (f"{{{n}}}" if n > 1 else ""))
    if fixed:
        parts.append(f'"{fixed}"')
    return " ".join(parts)
