"""The plan codec: model text to :class:`~aiplanner.actions.Plan` and back, in both modes.

* guided: the model answers ``{"c":1}``, the index of one of ``PlanRequest.candidates``;
* free: the model writes ``{"plan":[["M",2],["A",91]]}`` (codes and argument order from the
  registry): every place (an X,Y pair, a ``PLACE`` or ``COVER`` argument) is the index of one of
  the named places the prompt lists (:mod:`aiplanner.places`), turned back into its cell here.
  A step may also spell its places as cells, ``["M",3,4]`` (the step's length tells which), and
  the verbose ``{"steps":[{"act":"MoveTo","x":3,"y":4}]}`` form and the compact form under its
  old key, ``{"s":[...]}``, are accepted too (schemas, prompts and :meth:`PlanCodec.encode` use
  :data:`~aiplanner.schema.PLAN_KEY` only).

Packed answers are one JSON array with one element per agent, each with its ``"id"``; the
streaming parser (:mod:`aiplanner.stream_parser`) splits the array and
:meth:`PlanCodec.decode_element` turns each element into a plan.

Model text is untrusted: it is parsed with orjson only, bounded in size, and action codes are looked
up in the registry (never resolved by name from the text). This module checks the shape of a plan
against the registry; whether targets are visible and cells walkable is the validator's job.

Errors: text that is not the expected JSON raises :class:`ParseError`; a plan of the right shape
with bad content raises :class:`PlanRejected` with one of these ``reason`` strings:
``unknown_action``, ``bad_arguments``, ``bad_place`` (an index that names no place, or no cover
point where cover is required), ``too_many_steps``, ``empty_plan``, ``bad_choice``.
:class:`ElementError` (one packed element) adds ``bad_element``, ``missing_id``, ``unknown_id``
and ``bad_shape``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, Plan, Step
from aiplanner.config import MODES
from aiplanner.errors import ConfigError, ParseError, PlanRejected
from aiplanner.places import (
    PLACE_STRIDE,
    Place,
    Slot,
    free_options,
    pack_cell,
    slots,
    unpack_cell,
    with_cells,
)
from aiplanner.requests import PlanRequest
from aiplanner.schema import (
    LEGACY_PLAN_KEY,
    PLAN_KEY,
    choice_schema,
    compact_plan_schema,
    packed_schema,
)

__all__ = ["MAX_TEXT_CHARS", "ElementError", "PlanCodec", "extract_json", "json_values"]

MAX_TEXT_CHARS = 65_536
"""Longest model text :meth:`PlanCodec.decode` will look at; one plan is a few dozen bytes."""

_OPENER = re.compile(r"[{\[]")
_STRUCTURE = re.compile(r'["{}\[\]]')
_STRING_END = re.compile(r'["\\]')
_BARE_INDEX = re.compile(r"[0-9]{1,3}")
_FENCE = re.compile(r"```[A-Za-z]*")
# Agent ids in max_tokens(): esper ids are small, but budget for ten digits anyway.
_LARGE_ID = 10**10 - 1
_PACKED = (ArgKind.PLACE, ArgKind.COVER)
_CELL_MAX = PLACE_STRIDE - 1


class ElementError(PlanRejected):
    """One element of a packed answer was unusable.

    ``entity`` is the agent id when the element named a known or unknown one, else ``None``;
    ``reason`` is one of the codec's reasons or ``bad_element``/``missing_id``/``unknown_id``/
    ``bad_shape``.
    """

    def __init__(
        self, reason: str, detail: str, raw: str = "", *, entity: int | None = None
    ) -> None:
        super().__init__(reason, detail, raw)
        self.entity = entity


def extract_json(text: str) -> str:
    """The first balanced JSON object or array in ``text``, skipping prose and code fences around
    it. Brackets inside strings are ignored; the result is not yet validated as JSON.

    Raises :class:`ParseError` when there is none or it never closes.
    """
    first = _OPENER.search(text)
    if first is None:
        raise ParseError("no JSON object or array in the model output", raw=text)
    start = pos = first.start()
    depth = 0
    while True:
        m = _STRUCTURE.search(text, pos)
        if m is None:
            raise ParseError("the JSON in the model output never closes", raw=text)
        ch = m.group()
        pos = m.end()
        if ch == '"':
            pos = _skip_string(text, pos)
        elif ch in "{[":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[start:pos]


def json_values(text: str) -> list[object]:
    """Every JSON value (object or array) that starts at some bracket of ``text``, nested ones
    included, in order of their opening bracket: what a model could copy from a prompt.

    Raises :class:`ParseError` for ``text`` longer than :data:`MAX_TEXT_CHARS`.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise ParseError(f"text of {len(text)} chars exceeds {MAX_TEXT_CHARS}", text[:200])
    out: list[object] = []
    for m in _OPENER.finditer(text):
        try:
            out.append(orjson.loads(extract_json(text[m.start() :])))
        except (ParseError, orjson.JSONDecodeError):
            continue
    return out


def _skip_string(text: str, pos: int) -> int:
    while True:
        m = _STRING_END.search(text, pos)
        if m is None:
            raise ParseError("a JSON string in the model output never closes", raw=text)
        if m.group() == '"':
            return m.end()
        pos = m.end() + 1  # skip the escaped character, which may be a quote


class PlanCodec:
    """Encodes and decodes plans for one registry and one mode (``guided`` or ``free``).

    Raises :class:`ConfigError` for an unknown mode.
    """

    __slots__ = ("mode", "registry")

    def __init__(self, registry: ActionRegistry = DEFAULT_REGISTRY, mode: str = "guided") -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.registry = registry
        self.mode = mode

    # -- schemas -----------------------------------------------------------------------------

    def schema(self, req: PlanRequest) -> dict[str, Any]:
        """The JSON Schema of one agent's answer.

        Guided: a choice over ``req.candidates``. Free: the compact plan form narrowed to what
        the prompt offers (:func:`~aiplanner.places.free_options`): enemy ids to the living
        enemies shown, ally ids to the hurt allies shown and the agent itself when hurt, places
        to the indices of the named places. An action with nothing to name is left out.
        Raises :class:`ConfigError` in guided mode when ``req`` has no candidates, and in free
        mode when no action of the registry is possible for this snapshot.
        """
        if self.mode == "guided":
            return choice_schema(len(req.candidates))
        options = free_options(req.snapshot)
        return compact_plan_schema(
            self.registry,
            enemy_ids=[u.id for u in options.enemies],
            ally_ids=options.heal_ids,
            places=len(options.places),
            cover_places=options.cover_indices,
        )

    def packed_schema(self, reqs: Sequence[PlanRequest]) -> dict[str, Any]:
        """One array, one element per request in order, each ``{"id": entity, ...}``.

        Raises :class:`ConfigError` for no requests, a repeated entity, or the cases of
        :meth:`schema`.
        """
        by_id: dict[int, dict[str, Any]] = {}
        for req in reqs:
            if req.entity in by_id:
                raise ConfigError(f"entity {req.entity} appears twice in one packed request")
            by_id[req.entity] = self.schema(req)
        return packed_schema(by_id)

    # -- decoding ----------------------------------------------------------------------------

    def decode(self, text: str, req: PlanRequest) -> Plan:
        """The plan in one agent's answer ``text``; prose and code fences around the JSON are
        skipped. Guided mode returns ``req.candidates[c]`` and also accepts a bare index.

        Raises :class:`ParseError` when the text holds no JSON of the expected shape, and
        :class:`PlanRejected` (see the module docstring for reasons) for a bad plan or choice.
        """
        if len(text) > MAX_TEXT_CHARS:
            raise ParseError(f"model output of {len(text)} chars exceeds {MAX_TEXT_CHARS}", text)
        value: object
        if self.mode == "guided" and (bare := _bare_index(text)) is not None:
            value = {"c": bare}
        else:
            try:
                value = orjson.loads(extract_json(text))
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"invalid JSON in the model output: {exc}", raw=text) from exc
        return self._plan_from(value, req, text)

    def decode_element(
        self, value: object, reqs_by_id: Mapping[int, PlanRequest]
    ) -> tuple[int, Plan]:
        """The agent id and plan of one element of a packed answer, already parsed from JSON.

        Raises :class:`ElementError` (``entity`` set whenever an id could be read) for an element
        that is not an object, has no integer ``id``, names an agent not in ``reqs_by_id``, or
        holds a bad plan or choice (the reason of the underlying rejection is kept).
        """
        raw = _dump(value)
        if not isinstance(value, dict):
            raise ElementError("bad_element", "a packed element must be a JSON object", raw)
        entity = value.get("id")
        if not _is_int(entity):
            raise ElementError("missing_id", "the element has no integer 'id'", raw)
        req = reqs_by_id.get(entity)
        if req is None:
            raise ElementError("unknown_id", f"no agent {entity} in this batch", raw, entity=entity)
        try:
            return entity, self._plan_from(value, req, raw)
        except PlanRejected as exc:
            raise ElementError(exc.reason, exc.detail, raw, entity=entity) from exc
        except ParseError as exc:
            raise ElementError("bad_shape", str(exc), raw, entity=entity) from exc

    def _plan_from(self, value: object, req: PlanRequest, raw: str) -> Plan:
        if not isinstance(value, dict):
            raise ParseError("expected a JSON object", raw=raw)
        if self.mode == "guided":
            if "c" not in value:
                raise ParseError('expected a choice {"c": index}', raw=raw)
            return _choose(value["c"], req, raw)
        if PLAN_KEY in value:
            steps, compact = value[PLAN_KEY], True
        elif LEGACY_PLAN_KEY in value:
            steps, compact = value[LEGACY_PLAN_KEY], True
        elif "steps" in value:
            steps, compact = value["steps"], False
        else:
            raise ParseError(f'expected a plan {{"{PLAN_KEY}": [...]}}', raw=raw)
        if not isinstance(steps, list):
            raise ParseError("the plan's steps must be a JSON array", raw=raw)
        if not steps:
            raise PlanRejected("empty_plan", "the plan has no steps", raw)
        if len(steps) > self.registry.max_steps:
            raise PlanRejected(
                "too_many_steps", f"{len(steps)} steps, at most {self.registry.max_steps}", raw
            )
        if not compact:
            return Plan(tuple(self._verbose_step(i, s, raw) for i, s in enumerate(steps, 1)))
        return Plan(tuple(self._compact_step(i, s, req, raw) for i, s in enumerate(steps, 1)))

    def _compact_step(self, n: int, step: object, req: PlanRequest, raw: str) -> Step:
        if not isinstance(step, list) or not step:
            raise ParseError(f'step {n} must be an array ["code", args...]', raw=raw)
        code = step[0]
        spec = None
        if isinstance(code, str):
            # A full name is tolerated: models sometimes write "MoveTo" for "M".
            spec = self.registry.by_code(code) if len(code) == 1 else self.registry.get(code)
        if spec is None:
            raise PlanRejected("unknown_action", f"step {n}: unknown action {_short(code)}", raw)
        wire = step[1:]
        layout = slots(spec)
        if len(wire) == len(layout) and len(layout) != _cell_width(layout):
            places = free_options(req.snapshot).places
            return Step(spec.name, _args_from_places(spec, layout, n, wire, places, raw))
        return Step(spec.name, _check_args(spec, n, _cells_to_args(spec, layout, wire), raw))

    def _verbose_step(self, n: int, step: object, raw: str) -> Step:
        if not isinstance(step, dict):
            raise ParseError(f'step {n} must be an object {{"act": name, ...}}', raw=raw)
        name = step.get("act")
        spec = self.registry.get(name) if isinstance(name, str) else None
        if spec is None:
            raise PlanRejected("unknown_action", f"step {n}: unknown action {_short(name)}", raw)
        expected = {a.name for a in spec.args} | {"act"}
        if set(step) != expected:
            detail = f"step {n}: {spec.name} takes {sorted(expected - {'act'})}, got {sorted(step)}"
            raise PlanRejected("bad_arguments", detail, raw)
        return Step(spec.name, _check_args(spec, n, [step[a.name] for a in spec.args], raw))

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, plan: Plan, req: PlanRequest | None = None) -> str:
        """``plan`` in the compact free form, places spelt as cells:
        ``{"plan":[["M",3,4],["A",91]]}``. With ``req``, a step whose places are all named places
        of ``req``'s snapshot names them by index instead, as the model does:
        ``{"plan":[["M",2],["A",91]]}``.

        Raises :class:`ConfigError` for an action the registry does not know or a wrong number of
        arguments.
        """
        places = None if req is None else free_options(req.snapshot).places
        return orjson.dumps({PLAN_KEY: self._compact_steps(plan, places)}).decode()

    def encode_choice(self, index: int) -> str:
        """A guided answer, ``{"c":index}``."""
        return orjson.dumps({"c": index}).decode()

    def encode_element(
        self, entity: int, plan_or_index: Plan | int, req: PlanRequest | None = None
    ) -> str:
        """One packed element: ``{"id":12,"c":0}`` for an index, ``{"id":12,"plan":[...]}`` for a
        plan (places as :meth:`encode` writes them). Raises :class:`ConfigError` as
        :meth:`encode` does."""
        if isinstance(plan_or_index, int):
            return orjson.dumps({"id": entity, "c": plan_or_index}).decode()
        places = None if req is None else free_options(req.snapshot).places
        steps = self._compact_steps(plan_or_index, places)
        return orjson.dumps({"id": entity, PLAN_KEY: steps}).decode()

    def _compact_steps(
        self, plan: Plan, places: Sequence[Place] | None = None
    ) -> list[list[object]]:
        out: list[list[object]] = []
        for step in plan.steps:
            spec = self.registry.spec(step.action)
            if len(step.args) != len(spec.args):
                raise ConfigError(
                    f"{spec.name} takes {len(spec.args)} arguments, got {len(step.args)}"
                )
            indexed = _place_indices(spec, step, places) if places else None
            out.append(
                [spec.code, *(indexed if indexed is not None else with_cells(spec, step.args))]
            )
        return out

    def max_tokens(self, n_agents: int) -> int:
        """A safe output-token budget for an answer covering ``n_agents`` agents.

        Bounded by the characters of the longest valid answer (every token of this ASCII output
        is at least one character), plus slack for the whitespace a schema grammar allows. For one
        agent it covers both a single answer and a packed array of one.
        Raises :class:`ConfigError` when ``n_agents`` is below 1.
        """
        if n_agents < 1:
            raise ConfigError(f"n_agents must be at least 1, got {n_agents}")
        body: dict[str, object]
        if self.mode == "guided":
            body = {"c": 99}
        else:
            body = {PLAN_KEY: [_longest_step(self.registry)] * self.registry.max_steps}
        element = len(orjson.dumps({"id": _LARGE_ID, **body}))
        chars = 2 + n_agents * element + (n_agents - 1)
        # n_agents == 1 may be a single answer or a packed array of one: cover both.
        chars = max(chars, len(orjson.dumps(body)))
        return chars + chars // 4 + 8


def _longest_step(registry: ActionRegistry) -> list[object]:
    # Places spelt as cells are the longest form: an index is one or two digits.
    def widest(spec: ActionSpec) -> list[object]:
        out: list[object] = [spec.code]
        for slot in slots(spec):
            if slot.kind == "plain" or len(slot.args) == 2:
                args = (spec.args[i] for i in slot.args)
                out += [max(a.lo, a.hi, key=lambda v: len(str(v))) for a in args]
            else:
                out += [_CELL_MAX, _CELL_MAX]
        return out

    return max((widest(s) for s in registry.actions), key=lambda s: len(orjson.dumps(s)))


def _cell_width(layout: Sequence[Slot]) -> int:
    """How many integers a compact step with this layout has when its places are cells."""
    return sum(1 if s.kind == "plain" else 2 for s in layout)


def _place_indices(spec: ActionSpec, step: Step, places: Sequence[Place]) -> list[int] | None:
    """The step's arguments with each place as its index in ``places``; None when some place
    is not in the list (or the step has no place)."""
    index = {p.cell: i for i, p in enumerate(places)}
    out: list[int] = []
    found = False
    for slot in slots(spec):
        args = [step.args[i] for i in slot.args]
        if slot.kind == "plain":
            out += args
            continue
        cell = (args[0], args[1]) if len(args) == 2 else unpack_cell(args[0])
        i = index.get(cell)
        if i is None or (slot.kind == "cover" and not places[i].cover):
            return None
        out.append(i)
        found = True
    return out if found else None


def _args_from_places(
    spec: ActionSpec,
    layout: Sequence[Slot],
    n: int,
    wire: Sequence[object],
    places: Sequence[Place],
    raw: str,
) -> tuple[int, ...]:
    args: list[object] = [None] * len(spec.args)
    for slot, value in zip(layout, wire, strict=True):
        if slot.kind == "plain":
            args[slot.args[0]] = value
            continue
        if not _is_int(value) or not 0 <= value < len(places):
            detail = f"step {n}: place {_short(value)} is not one of 0..{len(places) - 1}"
            raise PlanRejected("bad_place", detail, raw)
        place = places[value]
        if slot.kind == "cover" and not place.cover:
            raise PlanRejected("bad_place", f"step {n}: place {value} is not cover", raw)
        if len(slot.args) == 2:
            args[slot.args[0]], args[slot.args[1]] = place.cell
        else:
            args[slot.args[0]] = pack_cell(*place.cell)
    return _check_args(spec, n, args, raw)


def _cells_to_args(spec: ActionSpec, layout: Sequence[Slot], wire: list[object]) -> list[object]:
    """A compact step's integers with places spelt as cells, back in declaration order (a
    ``PLACE``/``COVER`` cell packed into one integer). A wrong count is left for
    :func:`_check_args` to report."""
    if len(wire) != _cell_width(layout) or all(a.kind not in _PACKED for a in spec.args):
        return wire
    out: list[object] = []
    it = iter(wire)
    for a in spec.args:
        if a.kind not in _PACKED:
            out.append(next(it))
            continue
        x, y = next(it), next(it)
        if _is_int(x) and _is_int(y) and 0 <= x < PLACE_STRIDE and 0 <= y < PLACE_STRIDE:
            out.append(pack_cell(x, y))
        else:
            out.append([x, y])  # not a cell: _check_args rejects it as not an integer
    return out


def _choose(c: object, req: PlanRequest, raw: str) -> Plan:
    n = len(req.candidates)
    if not _is_int(c):
        raise PlanRejected("bad_choice", f"choice {_short(c)} is not an integer", raw)
    if not 0 <= c < n:
        raise PlanRejected("bad_choice", f"choice {c} is not in 0..{n - 1}", raw)
    return req.candidates[c]


def _check_args(spec: ActionSpec, n: int, args: Sequence[object], raw: str) -> tuple[int, ...]:
    if len(args) != len(spec.args):
        detail = f"step {n}: {spec.name} takes {len(spec.args)} arguments, got {len(args)}"
        raise PlanRejected("bad_arguments", detail, raw)
    out: list[int] = []
    for a, v in zip(spec.args, args, strict=True):
        if not _is_int(v):
            detail = f"step {n}: {a.name}={_short(v)} is not an integer"
            raise PlanRejected("bad_arguments", detail, raw)
        if a.kind in _PACKED:  # a packed cell: lo/hi do not apply, the validator checks it
            if v < 0:
                raise PlanRejected("bad_arguments", f"step {n}: {a.name}={v} is negative", raw)
        elif not a.lo <= v <= a.hi:
            detail = f"step {n}: {a.name}={v} is outside {a.lo}..{a.hi}"
            raise PlanRejected("bad_arguments", detail, raw)
        out.append(v)
    return tuple(out)


def _is_int(v: object) -> TypeGuard[int]:
    # bool is an int subclass; JSON true is not an argument.
    return isinstance(v, int) and not isinstance(v, bool)


def _bare_index(text: str) -> int | None:
    stripped = _FENCE.sub("", text).strip()
    return int(stripped) if _BARE_INDEX.fullmatch(stripped) else None


def _short(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _dump(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)[:2000]
